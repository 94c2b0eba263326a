"""REST + WebSocket API (FastAPI)."""

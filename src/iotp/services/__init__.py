"""Plain async domain functions shared by the worker and the API (no FastAPI here)."""

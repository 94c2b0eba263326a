"""MQTT ingestion: validate, register, batch, store, track presence, emit events."""

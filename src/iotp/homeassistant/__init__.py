"""Home Assistant MQTT discovery, both ways: the platform announces its devices to Home
Assistant (``publish``), and registers devices that announce themselves the way Home
Assistant expects (``consume``). ``bridge`` runs both on the broker (docs/devices.md)."""

"""IoT Platform: ESP32/MicroPython devices over MQTT, stored and watched in real time."""

__version__ = "0.1.0"

# IoT Platform reference firmware (MicroPython, ESP32). The same modules run on
# CPython inside the fleet simulator (src/iotp/simulator) with a simulated HAL.
VERSION = "1.0.0"
DEVICE_TYPE = "esp32-env"
PROTOCOL = 1

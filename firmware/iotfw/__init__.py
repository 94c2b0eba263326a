# IoT Platform reference firmware (MicroPython, ESP32). The same modules run on
# CPython inside the fleet simulator (src/iotp/simulator) with a simulated HAL.
VERSION = "1.0.0"
DEVICE_TYPE = "esp32-env"
PROTOCOL = 1


def unload(name):
    """Forgets the lazily loaded module iotfw.<name>, so the heap gets its code back
    once nothing refers to it (the next import loads it again)."""
    import sys

    sys.modules.pop(__name__ + "." + name, None)
    if name in globals():
        del globals()[name]

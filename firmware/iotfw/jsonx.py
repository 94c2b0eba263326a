# JSON helpers shared by the firmware modules.
try:
    import ujson as json  # noqa: F401  (MicroPython)
except ImportError:
    import json  # noqa: F401


def dumps(obj):
    return json.dumps(obj)


def loads(data):
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode()
    return json.loads(data)

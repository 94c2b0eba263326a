# JSON helpers shared by the firmware modules.
try:
    import ujson as json  # noqa: F401  (MicroPython)
except ImportError:
    import json  # noqa: F401


def dumps(obj):
    return json.dumps(obj)


def loads(data):
    if isinstance(data, memoryview):
        # MicroPython parses a view in place (its strings still checked as UTF-8):
        # no copy of a message in the receive buffer; CPython's json takes no view
        try:
            return json.loads(data)
        except TypeError:
            data = bytes(data)
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode()
    return json.loads(data)

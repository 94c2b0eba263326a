# Helpers for the firmware's pure tests. These tests run under pytest on CPython
# and inside MicroPython (tests/firmware/micropython/run.mjs), so they use plain
# asserts and nothing CPython-only.


async def until(probe, timeout=5.0, interval=0.02):
    """Polls ``probe`` until it holds, failing after ``timeout`` seconds: the tests'
    ``eventually()`` in plain asyncio, which MicroPython runs too."""
    import asyncio

    for _ in range(int(timeout / interval)):
        if probe():
            return
        await asyncio.sleep(interval)
    assert probe(), "condition not reached within %s s" % timeout


def raises(exc_type, fn, *args, **kwargs):
    """Calls fn and returns the exception it raised; fails if it raised none."""
    try:
        fn(*args, **kwargs)
    except exc_type as exc:
        return exc
    raise AssertionError(f"{exc_type.__name__} not raised")


class MemoryStorage:
    """The file part of the HAL, in memory."""

    def __init__(self, files=None):
        self.files = dict(files or {})
        self.writes = 0

    def read_file(self, path):
        return self.files.get(path)

    def write_file(self, path, data):
        self.writes += 1
        self.files[path] = b"".join(data) if isinstance(data, list) else bytes(data)


class Stream:
    """Minimal binary stream with read(n), readline(), seek(pos) and tell()
    (io.BytesIO-like)."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def seek(self, pos):
        self.pos = pos

    def tell(self):
        return self.pos

    def read(self, n):
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def readinto(self, buf):
        out = self.read(len(buf))
        buf[: len(out)] = out
        return len(out)

    def readline(self):
        end = self.data.find(b"\n", self.pos)
        end = len(self.data) if end < 0 else end + 1
        out = self.data[self.pos : end]
        self.pos = end
        return out


class Sink:
    def __init__(self):
        self.files = {}

    def __call__(self, path):
        sink = self
        parts = []

        class Out:
            def write(self, data):
                parts.append(bytes(data))

            def close(self):
                sink.files[path] = b"".join(parts)

        return Out()

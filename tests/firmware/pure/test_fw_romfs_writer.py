# ROMFS images (iotfw/romfs.py), on CPython and on MicroPython: the bytes are those
# MicroPython's own writer (mpremote) gives for the same tree, byte for byte
# (tests/firmware/test_fw_romfs.py compares the two on many trees).
import io

from fwtest_helpers import raises
from iotfw import romfs


class Chunks:
    """A writable sink that keeps what it is given (and how)."""

    def __init__(self):
        self.parts = []

    def write(self, data):
        self.parts.append(bytes(data))


def test_a_tree_of_a_file_and_a_directory():
    out = Chunks()
    files = [
        ("hal.mpy", 3, lambda: io.BytesIO(b"hhh")),
        ("iotfw/a.mpy", 130, lambda: io.BytesIO(b"a" * 130)),
    ]
    size = romfs.pack(files, out, bytearray(64))
    image = b"".join(out.parts)
    assert size == len(image) == 172
    assert image == (
        b"\xd2\xcd1\x80\x81&"  # header, the length made one byte longer: the image is even
        + b"\x05\r\x07hal.mpy\x02\x03hhh"  # a file: its name, its data
        + b"\x04\x81\x14\x05iotfw"  # a directory: its name, then its files
        + b"\x05\x81\x0b\x05a.mpy\x02\x81\x02" + b"a" * 130
    )
    # streamed: no write carries more than a chunk of a file
    assert max(len(part) for part in out.parts) <= 64


def test_a_short_file_is_an_error():
    files = [("iotfw/a.mpy", 10, lambda: io.BytesIO(b"short"))]
    raises(OSError, romfs.pack, files, Chunks())

# ROMFS images: the firmware's modules in one read-only image that MicroPython
# (1.25+, built with MICROPY_VFS_ROM) mounts with vfs.VfsRom and runs in place.
# Imported from an image, a module's bytecode, names and string constants stay in
# the image (flash on the ESP32) instead of being copied to the heap: the firmware
# then needs about a third less heap (firmware/README.md, "Heap").
#
# The format is MicroPython's (extmod/vfs_rom.c): a header, then records, each a
# kind and a length (unsigned base-128 numbers, most significant group first,
# high bit set on all but the last) and a payload. A directory's payload is its
# name and its records; a file's is its name and a data record.
MOUNT = "/rom"  # where the ports mount the ROMFS partition
IMAGE = "iotfw.rom"  # the image of a firmware, next to its files (factory or slot)

_HEADER = b"\xd2\xcd\x31"
_DATA = 2
_DIRECTORY = 4
_FILE = 5


def _uint(n):
    groups = [n & 0x7F]
    n >>= 7
    while n:
        groups.append(0x80 | (n & 0x7F))
        n >>= 7
    groups.reverse()
    return bytes(groups)


def _head(kind, length):
    return _uint(kind) + _uint(length)


def pack(files, out, buf=None):
    """Writes an image of files to out (write()): a list of (path, size, open),
    path '/'-separated, open() the file to read (readinto(b), close()); of two files
    with the same path the later is kept. The files are streamed through buf (1 KB
    when not given): the image is never held in memory. Returns the image's size."""
    top = []  # [name, size, open] of a file, [name, None, [entries]] of a directory
    for path, size, opener in files:
        parts = path.split("/")
        level = top
        for part in parts[:-1]:
            level = _directory(level, part.encode())
        name = parts[-1].encode()
        for i in range(len(level)):
            if level[i][0] == name and level[i][1] is not None:
                level.pop(i)
                break
        level.append([name, size, opener])
    body = _length(top)
    head = _uint(body)
    if (len(_HEADER) + len(head) + body) % 2:
        head = b"\x80" + head  # the same number, one byte longer: the image is even
    out.write(_HEADER + head)
    view = memoryview(buf if buf is not None else bytearray(1024))
    return len(_HEADER) + len(head) + _write(top, out, view)


def _directory(level, name):
    for entry in level:
        if entry[0] == name and entry[1] is None:
            return entry[2]
    entry = [name, None, []]
    level.append(entry)
    return entry[2]


def _payload(name, size, content):
    """The length of a file's or a directory's payload."""
    named = len(_uint(len(name))) + len(name)
    if size is None:
        return named + _length(content)
    return named + len(_head(_DATA, size)) + size


def _length(entries):
    total = 0
    for name, size, content in entries:
        payload = _payload(name, size, content)
        total += len(_head(_FILE if size is not None else _DIRECTORY, payload)) + payload
    return total


def _write(entries, out, view):
    written = 0
    for name, size, content in entries:
        kind = _FILE if size is not None else _DIRECTORY
        head = _head(kind, _payload(name, size, content)) + _uint(len(name)) + name
        if size is None:
            out.write(head)
            written += len(head) + _write(content, out, view)
            continue
        head += _head(_DATA, size)
        out.write(head)
        written += len(head) + size
        f = content()
        try:
            left = size
            while left:
                got = f.readinto(view[:min(len(view), left)])
                if not got:
                    raise OSError("%s is shorter than %d bytes" % (name.decode(), size))
                out.write(view[:got])
                left -= got
        finally:
            f.close()
    return written


def fits(path, room):
    """The size of the image at path when there is one and it fits in room bytes
    (the partition), else None."""
    import os

    try:
        length = os.stat(path)[6]
    except OSError:
        return None
    if length > room:
        print("romfs: %s is %d bytes, more than the partition (%d)" % (path, length, room))
        return None
    return length


def unmount():
    """Unmounts MOUNT and takes it off sys.path (the ports' romfs_map release it so
    before boot selection)."""
    import sys

    import vfs

    try:
        vfs.umount(MOUNT)
    except OSError:
        pass
    for entry in (MOUNT, MOUNT + "/lib"):
        while entry in sys.path:
            sys.path.remove(entry)


def running_from_image():
    """True when the firmware was imported from a mounted image (a ROMFS build)."""
    import iotfw

    return getattr(iotfw, "__file__", "").startswith(MOUNT + "/")


def board_files():
    """The files at the top of the running image: the board's own modules (the unix
    port's HAL), which an update does not carry and its image keeps. On the ESP32
    the image holds only iotfw (its HAL is iotfw/hal.py): none."""
    import os

    found = []
    for entry in os.ilistdir(MOUNT):
        if entry[1] == 0x8000:  # a file
            path = MOUNT + "/" + entry[0]
            found.append((entry[0], os.stat(path)[6], lambda path=path: open(path, "rb")))
    return found

# OTA bundle: one file that carries a firmware version and its files, so an update
# is a single download with a single SHA-256.
#
#   IOTPFW1 <version>\n
#   F <path> <size>\n<size bytes>     (repeated)
#   E\n
#
# Paths are relative, '/'-separated, made of [A-Za-z0-9_.-] parts, no '..'.

MAGIC = b"IOTPFW1"
MAX_FILES = 64
MAX_FILE_SIZE = 512 * 1024


class BundleError(ValueError):
    pass


def valid_path(path):
    if not isinstance(path, str) or not 0 < len(path) <= 128 or path[0] == "/":
        return False
    for part in path.split("/"):
        if not part or part == "." or part == "..":
            return False
        for ch in part:
            if not (("0" <= ch <= "9") or ("a" <= ch <= "z") or ("A" <= ch <= "Z")
                    or ch in "_.-"):
                return False
    return True


def valid_version(version):
    return isinstance(version, str) and 0 < len(version) <= 64 and " " not in version \
        and "\n" not in version


def build(version, files):
    """files: list of (path, bytes). Returns the bundle bytes."""
    if not valid_version(version):
        raise BundleError("bad version")
    out = [MAGIC + b" " + version.encode() + b"\n"]
    for path, data in files:
        if not valid_path(path):
            raise BundleError("bad path: %r" % (path,))
        out.append(b"F " + path.encode() + b" " + str(len(data)).encode() + b"\n")
        out.append(bytes(data))
    out.append(b"E\n")
    return b"".join(out)


def _line(stream):
    line = stream.readline()
    if not line or line[-1:] != b"\n":
        raise BundleError("truncated bundle")
    return line[:-1].decode()


def unpack(stream, sink, chunk=1024):
    """Reads a bundle from a binary stream.

    sink(path) returns a writable file-like object (write, close) for that path.
    Returns (version, [paths]).
    """
    head = _line(stream)
    if not head.startswith(MAGIC.decode() + " "):
        raise BundleError("not a firmware bundle")
    version = head[len(MAGIC) + 1:]
    if not valid_version(version):
        raise BundleError("bad version in bundle")
    paths = []
    while True:
        line = _line(stream)
        if line == "E":
            return version, paths
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "F" or not parts[2].isdigit():
            raise BundleError("bad entry header")
        path = parts[1]
        size = int(parts[2])
        if not valid_path(path):
            raise BundleError("bad path: %r" % (path,))
        if size > MAX_FILE_SIZE or len(paths) >= MAX_FILES:
            raise BundleError("bundle too large")
        out = sink(path)
        try:
            left = size
            while left:
                data = stream.read(min(chunk, left))
                if not data:
                    raise BundleError("truncated bundle")
                out.write(data)
                left -= len(data)
        finally:
            out.close()
        paths.append(path)

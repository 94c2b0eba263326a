# OTA bundle, the device's side (the platform's is src/iotp/services/manifest.py;
# the layout is documented in docs/protocol.md, "Firmware bundles"):
#
#   IOTPFW2 <manifest size> <signature size>\n
#   <manifest: canonical JSON, the bytes that are signed>
#   <signature: empty (unsigned), or public key (32 bytes) + Ed25519 signature (64)>
#   <the files' bytes, in manifest order; a file's .mpy variants follow its .py>
#
# The manifest is read and its signature checked before any file is written;
# each file is then checked against the manifest's size and SHA-256 as it is
# written. Paths are relative, '/'-separated, made of [A-Za-z0-9_.-] parts.
#
# The bundle is read from the file it was downloaded to, and the manifest is never
# held whole: its signature is checked over its bytes read a chunk at a time, and
# its "files" entries are parsed one at a time (a manifest of 32 files with their
# .mpy is ~8 KB of text and ~25 KB of parsed objects on a device's heap).
import binascii
import hashlib

from iotfw import jsonx

MAGIC = "IOTPFW2"
FORMAT = 2
SIGNATURE_SIZE = 96
MAX_MANIFEST = 16 * 1024
MAX_FILES = 64
MAX_FILE_SIZE = 512 * 1024
MAX_ENTRY = 4096  # the text of one "files" entry


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


def _is_hex(value, size):
    if not isinstance(value, str) or len(value) != size:
        return False
    for ch in value:
        if ch not in "0123456789abcdef":
            return False
    return True


def _check_blob(entry, where):
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE:
        raise BundleError("bad size for %s" % where)
    if not _is_hex(entry.get("sha256"), 64):
        raise BundleError("bad sha256 for %s" % where)


def check_head(manifest):
    """Raises BundleError unless the manifest's fields other than its files (parsed
    JSON) are well-formed."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError("unknown manifest format")
    if not valid_version(manifest.get("version")):
        raise BundleError("bad version in manifest")
    key_id = manifest.get("key_id")
    if key_id != "" and not _is_hex(key_id, 16):
        raise BundleError("bad key_id in manifest")
    next_key = manifest.get("next_key")
    if next_key is not None and not _is_hex(next_key, 64):
        raise BundleError("bad next_key in manifest")


def check_entry(entry):
    """Raises BundleError unless entry (one of the manifest's files, parsed JSON) is
    well-formed. Returns its path."""
    if not isinstance(entry, dict) or not valid_path(entry.get("path")):
        raise BundleError("bad file entry in manifest")
    path = entry["path"]
    _check_blob(entry, path)
    variants = entry.get("mpy", [])
    if not isinstance(variants, list) or (variants and not path.endswith(".py")):
        raise BundleError("bad mpy variants for %s" % path)
    for variant in variants:
        targets = variant.get("micropython") if isinstance(variant, dict) else None
        if not isinstance(targets, list) or not targets:
            raise BundleError("an mpy variant of %s names no MicroPython version" % path)
        for target in targets:
            if not isinstance(target, str) or not 0 < len(target) <= 16:
                raise BundleError("bad MicroPython version for %s" % path)
        _check_blob(variant, path)
    return path


def read_header(stream):
    """Reads a bundle's first line: returns (manifest size, signature size), the
    stream left at the manifest."""
    line = b""
    while line[-1:] != b"\n":
        byte = stream.read(1)
        if not byte or len(line) >= 64:
            raise BundleError("not a firmware bundle")
        line += byte
    try:
        parts = line[:-1].decode().split(" ")
    except UnicodeError:
        raise BundleError("not a firmware bundle")
    if parts[0] != MAGIC:
        if parts[0].startswith("IOTPFW"):
            raise BundleError("unsupported bundle format %s" % parts[0])
        raise BundleError("not a firmware bundle")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise BundleError("bad bundle header")
    size = int(parts[1])
    sig_size = int(parts[2])
    if not 0 < size <= MAX_MANIFEST:
        raise BundleError("manifest too large")
    if sig_size not in (0, SIGNATURE_SIZE):
        raise BundleError("bad signature size")
    return size, sig_size


class Bundle:
    """A bundle in a seekable stream (the file it was downloaded to): the position
    and size of its manifest, its signature and where its files' bytes begin."""

    def __init__(self, stream):
        self.stream = stream
        size, sig_size = read_header(stream)
        self.start = stream.tell()
        self.size = size
        stream.seek(self.start + size)
        self.signature = _read(stream, sig_size)
        self.data_start = self.start + size + sig_size

    def manifest_chunks(self, n=512):
        """The manifest's bytes, n at a time (what its signature signs)."""
        stream = self.stream
        stream.seek(self.start)
        left = self.size
        while left:
            data = stream.read(min(n, left))
            if not data:
                raise BundleError("truncated bundle")
            left -= len(data)
            yield data

    def manifest(self):
        """The manifest's fields but its files, after every entry of those was checked
        (and the paths found distinct): with "count", the number of files."""
        seen = {}

        count = [0]

        def check(entry):
            path = check_entry(entry)
            # a .py with .mpy variants may be installed as its .mpy: both names are its
            names = [path]
            if entry.get("mpy"):
                names.append(path[:-3] + ".mpy")
            for name in names:
                if name in seen:
                    raise BundleError("%s is listed twice" % name)
                seen[name] = True
            count[0] += 1
            if count[0] > MAX_FILES:
                raise BundleError("manifest lists no files or too many")

        head = self._scan(check)
        if not count[0]:
            raise BundleError("manifest lists no files or too many")
        head["count"] = count[0]
        return head

    def unpack(self, data, sink, micropython=None, buf=None):
        """Writes the files (their bytes read from data, a second stream on the same
        bundle) through sink(path), which returns a writable file-like object (write,
        close). Every written file is checked against the manifest. buf: the buffer
        to read through (1 KB when not given). Returns the paths written."""
        data.seek(self.data_start)
        view = memoryview(buf if buf is not None else bytearray(1024))
        paths = []

        def install(entry):
            check_entry(entry)
            chosen, path = pick(entry, micropython)
            blobs = [entry] + entry.get("mpy", [])
            for i, blob in enumerate(blobs):
                if i == chosen:
                    _copy(data, blob, path, sink(path), view)
                    paths.append(path)
                else:
                    _copy(data, blob, path, None, view)

        self._scan(install)
        if data.read(1):
            raise BundleError("data after the last file")
        return paths

    def _scan(self, on_entry):
        """Reads the manifest's JSON a chunk at a time: each entry of its "files" goes
        to on_entry(parsed) as it ends; returns the rest, parsed, its files left out.
        Between entries only "," and whitespace are taken, and the key is "files"
        only as written so: anything else is refused or left to the JSON parser of
        the rest, which then finds no "files" to be empty."""
        head = bytearray()
        entry = None  # the text of the entry being read
        depth = 0
        in_str = escaped = False
        in_files = files_seen = False
        expect = b""  # in the files array, between entries: what may come next
        key_start = 0  # where the last top-level string began in head
        key = None  # that string's text, as written
        files_key = False  # it was "files", and its colon followed
        for data in self.manifest_chunks(256):
            for c in data:
                if entry is not None:
                    entry.append(c)
                    if len(entry) > MAX_ENTRY:
                        raise BundleError("a file entry of the manifest is too long")
                    if in_str:
                        if escaped:
                            escaped = False
                        elif c == 0x5C:  # backslash
                            escaped = True
                        elif c == 0x22:  # quote
                            in_str = False
                    elif c == 0x22:
                        in_str = True
                    elif c == 0x7B or c == 0x5B:  # { [
                        depth += 1
                    elif c == 0x7D or c == 0x5D:  # } ]
                        depth -= 1
                        if depth == 2:
                            on_entry(_parse(entry))
                            entry = None
                            expect = b",]"
                    continue
                if in_files:
                    if c in _SPACE:
                        continue
                    if c not in expect:
                        raise BundleError("bad file entry in manifest")
                    if c == 0x7B:
                        entry = bytearray(b"{")
                        depth = 3
                    elif c == 0x2C:  # comma
                        expect = b"{"
                    else:  # the closing bracket
                        in_files = False
                        depth = 1
                        head.append(c)
                    continue
                head.append(c)
                if in_str:
                    if escaped:
                        escaped = False
                    elif c == 0x5C:
                        escaped = True
                    elif c == 0x22:
                        in_str = False
                        if depth == 1:
                            key = bytes(head[key_start:])
                    continue
                if c == 0x22:
                    in_str = True
                    if depth == 1:
                        key_start = len(head) - 1
                elif depth == 1 and c == 0x3A:  # colon
                    files_key = key == b'"files"'
                elif depth == 1 and c == 0x2C:
                    files_key = False
                    key = None
                elif c == 0x7B or c == 0x5B:
                    depth += 1
                    if depth == 2 and c == 0x5B and files_key:
                        if files_seen:
                            raise BundleError("the manifest lists its files twice")
                        files_seen = in_files = True
                        expect = b"{]"
                    files_key = False
                elif c == 0x7D or c == 0x5D:
                    depth -= 1
        if depth or in_str or entry is not None or in_files:
            raise BundleError("manifest is not JSON")
        manifest = _parse(head)
        check_head(manifest)
        if manifest.get("files") != [] or not files_seen:
            raise BundleError("manifest lists no files or too many")
        return manifest


_SPACE = b" \t\r\n"


def _parse(text):
    try:
        return jsonx.loads(bytes(text))
    except ValueError:
        raise BundleError("manifest is not JSON")


def _read(stream, size):
    data = stream.read(size) if size else b""
    if len(data) != size:
        raise BundleError("truncated bundle")
    return data


def version_key(version):
    """Sort key of a version string: numbers compare as numbers ("1.10" > "1.9"),
    a pre-release ("1.2.0-rc1") sorts before its release, build metadata (+...)
    is ignored."""
    version = version.split("+")[0]
    main = version.split("-")[0]
    pre = version[len(main) + 1:]
    key = []
    for part in main.split("."):
        key.append((0, int(part), "") if part.isdigit() else (1, 0, part))
    return (key, 0 if pre else 1, pre)


def older(version, than):
    return version_key(version) < version_key(than)


def pick(entry, micropython):
    """The blob of a manifest entry to install: the first .mpy variant that
    targets this MicroPython version ("1.24.1" matches "1.24"), else the .py.
    Returns (index of the blob in the entry: 0 = .py, its path)."""
    if micropython:
        for i, variant in enumerate(entry.get("mpy", [])):
            for target in variant["micropython"]:
                if micropython == target or micropython.startswith(target + "."):
                    return i + 1, entry["path"][:-3] + ".mpy"
    return 0, entry["path"]


def _copy(stream, blob, path, out, view):
    """Copies one blob to out (None: skips it) through view, a memoryview of the
    one buffer an unpack reads into (no allocation per chunk to fragment the heap)."""
    sha = hashlib.sha256() if out is not None else None
    try:
        left = blob["size"]
        while left:
            got = stream.readinto(view[:min(len(view), left)])
            if not got:
                raise BundleError("truncated bundle")
            if out is not None:
                sha.update(view[:got])
                out.write(view[:got])
            left -= got
    finally:
        if out is not None:
            out.close()
    if sha is not None and hexlify(sha.digest()) != blob["sha256"]:
        raise BundleError("%s does not match the manifest's SHA-256" % path)


def hexlify(digest):
    return binascii.hexlify(digest).decode()


def key_id(public_key):
    """The id a key is known by: the first 8 bytes of the SHA-256 of its 32 bytes."""
    return hexlify(hashlib.sha256(public_key).digest()[:8])

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
import binascii
import hashlib

from iotfw import jsonx

MAGIC = "IOTPFW2"
FORMAT = 2
SIGNATURE_SIZE = 96
MAX_MANIFEST = 16 * 1024
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


def check_manifest(manifest):
    """Raises BundleError unless manifest (parsed JSON) is well-formed."""
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
    files = manifest.get("files")
    if not isinstance(files, list) or not files or len(files) > MAX_FILES:
        raise BundleError("manifest lists no files or too many")
    seen = {}
    for entry in files:
        if not isinstance(entry, dict) or not valid_path(entry.get("path")):
            raise BundleError("bad file entry in manifest")
        path = entry["path"]
        if path in seen:
            raise BundleError("%s is listed twice" % path)
        seen[path] = True
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


def read_head(stream):
    """Reads the head of a bundle: returns (manifest bytes, signature bytes)."""
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
    manifest = _read(stream, size)
    signature = _read(stream, sig_size)
    return manifest, signature


def parse_manifest(data):
    try:
        manifest = jsonx.loads(data)
    except ValueError:
        raise BundleError("manifest is not JSON")
    check_manifest(manifest)
    return manifest


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


def unpack(stream, manifest, sink, micropython=None, chunk=1024):
    """Writes the files of a bundle (its head already read) through sink(path),
    which returns a writable file-like object (write, close). Every written file
    is checked against the manifest. Returns the paths written."""
    paths = []
    for entry in manifest["files"]:
        chosen, path = pick(entry, micropython)
        blobs = [entry] + entry.get("mpy", [])
        for i, blob in enumerate(blobs):
            if i == chosen:
                _copy(stream, blob, path, sink(path), chunk)
                paths.append(path)
            else:
                _copy(stream, blob, path, None, chunk)
    if stream.read(1):
        raise BundleError("data after the last file")
    return paths


def _copy(stream, blob, path, out, chunk):
    sha = hashlib.sha256() if out is not None else None
    try:
        left = blob["size"]
        while left:
            data = stream.read(min(chunk, left))
            if not data:
                raise BundleError("truncated bundle")
            if out is not None:
                sha.update(data)
                out.write(data)
            left -= len(data)
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

# The device's side of the bundle format (iotfw/bundle.py): head, manifest checks,
# unpacking with per-file hashes, .mpy variant choice, version order. Signed bundles
# from the platform's builder: tests/firmware/test_fw_signed_ota.py.
import binascii
import hashlib
import json

from fwtest_helpers import Sink, Stream, raises
from iotfw import bundle


def _hex(data):
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def make(version, files, key_id="", signature=b""):
    """files: list of (path, data, [(targets, mpy data)])."""
    entries = []
    body = []
    for path, data, variants in files:
        entry = {"path": path, "size": len(data), "sha256": _hex(data)}
        body.append(data)
        if variants:
            entry["mpy"] = [
                {"micropython": t, "size": len(d), "sha256": _hex(d)} for t, d in variants
            ]
            body.extend([d for _, d in variants])
        entries.append(entry)
    manifest = json.dumps(
        {"format": 2, "version": version, "key_id": key_id, "files": entries}
    ).encode()
    head = ("IOTPFW2 %d %d\n" % (len(manifest), len(signature))).encode()
    return head + manifest + signature + b"".join(body)


def _open(data):
    stream = Stream(data)
    raw, sig = bundle.read_head(stream)
    return stream, bundle.parse_manifest(raw), sig


def test_unpack_checks_every_file():
    data = make(
        "1.1.0",
        [("iotfw/__init__.py", b'VERSION = "1.1.0"\n', None), ("main.py", b"x" * 3000, None)],
    )
    stream, manifest, sig = _open(data)
    assert sig == b""
    assert manifest["version"] == "1.1.0"
    sink = Sink()
    assert bundle.unpack(stream, manifest, sink, chunk=512) == ["iotfw/__init__.py", "main.py"]
    assert sink.files["main.py"] == b"x" * 3000


def test_a_tampered_file_is_refused():
    data = make("1", [("a.py", b"good", None), ("b.py", b"more", None)])
    tampered = data[:-4] + b"evil"
    stream, manifest, _ = _open(tampered)
    exc = raises(bundle.BundleError, bundle.unpack, stream, manifest, Sink())
    assert "b.py does not match" in str(exc)


def test_mpy_variant_chosen_by_micropython_version():
    data = make(
        "2",
        [
            ("iotfw/x.py", b"py source", [(["1.23"], b"M-1.23"), (["1.24", "1.25"], b"M-1.24")]),
            ("main.py", b"main", None),
        ],
    )
    for version, path, content in (
        ("1.24.1", "iotfw/x.mpy", b"M-1.24"),
        ("1.25.0", "iotfw/x.mpy", b"M-1.24"),
        ("1.23.0", "iotfw/x.mpy", b"M-1.23"),
        ("1.2", "iotfw/x.py", b"py source"),
        ("1.240.0", "iotfw/x.py", b"py source"),
        (None, "iotfw/x.py", b"py source"),
    ):
        stream, manifest, _ = _open(data)
        sink = Sink()
        assert bundle.unpack(stream, manifest, sink, version) == [path, "main.py"]
        assert sink.files == {path: content, "main.py": b"main"}


def test_bad_bundles_are_refused():
    good = make("2", [("a.py", b"abc", None)])
    manifest_of = good.split(b"\n", 1)[1][:-3]
    for data in (
        b"",
        b"ZIP\n",
        b"IOTPFW1 2\nF a.py 1\nx\nE\n",
        b"IOTPFW2 abc 0\n",
        b"IOTPFW2 5 7\n{}",
        b"IOTPFW2 99999999 0\n",
        b"x" * 100,
        good[:20],
    ):
        raises(bundle.BundleError, bundle.read_head, Stream(data))
    assert "unsupported bundle format IOTPFW1" in str(
        raises(bundle.BundleError, bundle.read_head, Stream(b"IOTPFW1 2\n"))
    )
    assert bundle.parse_manifest(manifest_of)["version"] == "2"
    for manifest in (
        b"[]",
        b"not json",
        b'{"format": 1, "version": "1", "key_id": "", "files": []}',
        b'{"format": 2, "version": "a b", "key_id": "", "files": [{"path": "a", "size": 1, '
        b'"sha256": "' + b"0" * 64 + b'"}]}',
        b'{"format": 2, "version": "1", "key_id": "", "files": []}',
        b'{"format": 2, "version": "1", "key_id": "xyz", "files": [{"path": "a", "size": 1, '
        b'"sha256": "' + b"0" * 64 + b'"}]}',
        b'{"format": 2, "version": "1", "key_id": "", "files": [{"path": "../etc", "size": 1, '
        b'"sha256": "' + b"0" * 64 + b'"}]}',
        b'{"format": 2, "version": "1", "key_id": "", "files": [{"path": "a", "size": -1, '
        b'"sha256": "' + b"0" * 64 + b'"}]}',
        b'{"format": 2, "version": "1", "key_id": "", "files": [{"path": "a.py", "size": 1, '
        b'"sha256": "' + b"0" * 64 + b'", "mpy": [{"size": 1, "sha256": "' + b"0" * 64 + b'"}]}]}',
    ):
        raises(bundle.BundleError, bundle.parse_manifest, manifest)
    # data after the last file
    stream, manifest, _ = _open(good + b"!")
    raises(bundle.BundleError, bundle.unpack, stream, manifest, Sink())


def test_version_order():
    for older, newer in (
        ("1.0.0", "1.0.1"),
        ("1.9", "1.10"),
        ("1.2.0-rc1", "1.2.0"),
        ("1.2.0", "1.2.1-rc1"),
        ("1.0", "1.0.1"),
        ("0.9.9", "1.0.0"),
        ("1.0.0-alpha", "1.0.0-beta"),
    ):
        assert bundle.older(older, newer)
        assert not bundle.older(newer, older)
    assert not bundle.older("1.0.0+build7", "1.0.0")
    assert not bundle.older("1.0.0", "1.0.0")


def test_valid_path():
    assert bundle.valid_path("iotfw/mqtt.py")
    for bad in ("", "/x", "a//b", "a/./b", "a b", "..", "x" * 129):
        assert not bundle.valid_path(bad)


def test_key_id():
    key = binascii.unhexlify("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert bundle.key_id(key) == binascii.hexlify(hashlib.sha256(key).digest()[:8]).decode()

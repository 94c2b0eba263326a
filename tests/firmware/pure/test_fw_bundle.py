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


class Staged:
    """A bundle as the device reads it: the manifest through one stream, the files'
    bytes through another."""

    def __init__(self, data):
        self.bundle = bundle.Bundle(Stream(data))
        self.data = Stream(data)

    def unpack(self, sink, micropython=None, buf=None):
        return self.bundle.unpack(self.data, sink, micropython, buf)


def _open(data):
    staged = Staged(data)
    return staged, staged.bundle.manifest(), staged.bundle.signature


def _manifest(text):
    """The checked head of a bundle whose manifest is text."""
    head = ("IOTPFW2 %d 0\n" % len(text)).encode()
    return bundle.Bundle(Stream(head + text)).manifest()


def test_unpack_checks_every_file():
    data = make(
        "1.1.0",
        [("iotfw/__init__.py", b'VERSION = "1.1.0"\n', None), ("main.py", b"x" * 3000, None)],
    )
    staged, manifest, sig = _open(data)
    assert sig == b""
    assert manifest["version"] == "1.1.0"
    assert manifest["count"] == 2
    sink = Sink()
    assert staged.unpack(sink, buf=bytearray(512)) == ["iotfw/__init__.py", "main.py"]
    assert sink.files["main.py"] == b"x" * 3000


def test_a_tampered_file_is_refused():
    data = make("1", [("a.py", b"good", None), ("b.py", b"more", None)])
    tampered = data[:-4] + b"evil"
    staged, _, _ = _open(tampered)
    exc = raises(bundle.BundleError, staged.unpack, Sink())
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
        staged, _, _ = _open(data)
        sink = Sink()
        assert staged.unpack(sink, version) == [path, "main.py"]
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
        raises(bundle.BundleError, lambda: bundle.Bundle(Stream(data)).manifest())
    assert "unsupported bundle format IOTPFW1" in str(
        raises(bundle.BundleError, bundle.Bundle, Stream(b"IOTPFW1 2\n"))
    )
    assert _manifest(manifest_of)["version"] == "2"
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
        raises(bundle.BundleError, _manifest, manifest)
    # data after the last file
    staged, _, _ = _open(good + b"!")
    raises(bundle.BundleError, staged.unpack, Sink())


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


def test_the_manifest_is_read_a_chunk_at_a_time_whatever_its_layout():
    """Entries are found by the JSON's structure, not its spacing, and strings may
    hold brackets and quotes."""
    data = b"mpy data"
    entry = {
        "path": "iotfw/x.py",
        "size": 3,
        "sha256": _hex(b"abc"),
        "mpy": [{"micropython": ['1.2]"{x'], "size": len(data), "sha256": _hex(data)}],
    }
    other = {"path": "b.py", "size": 1, "sha256": _hex(b"b")}
    text = (
        '{\n  "key_id" : "",\n  "files" :\t[\n    %s ,\r\n    %s\n  ] ,\n'
        '  "format": 2, "version": "9", "note": {"files": ["not", "these"]}\n}\n'
        % (json.dumps(entry), json.dumps(other))
    ).encode()
    raw = ("IOTPFW2 %d 0\n" % len(text)).encode() + text + b"abc" + data + b"b"

    class Counting(Stream):
        largest = 0

        def read(self, n):
            Counting.largest = max(Counting.largest, n)
            return Stream.read(self, n)

    staged = bundle.Bundle(Counting(raw))
    manifest = staged.manifest()
    assert manifest["version"] == "9"
    assert manifest["count"] == 2
    assert manifest["note"] == {"files": ["not", "these"]}
    sink = Sink()
    assert staged.unpack(Stream(raw), sink, '1.2]"{x') == ["iotfw/x.mpy", "b.py"]
    assert sink.files == {"iotfw/x.mpy": data, "b.py": b"b"}
    assert len(text) > 256
    assert Counting.largest <= 256  # never the whole manifest


def test_manifests_whose_files_are_not_a_list_of_entries_are_refused():
    blob = '"size": 1, "sha256": "%s"' % _hex(b"x")
    head = '"format": 2, "version": "1", "key_id": ""'
    for files in (
        '"files": {}',
        '"files": ["a.py"]',
        '"files": [{"path": "a.py", %s}, 7]' % blob,
        '"files": [{"path": "a.py", %s}], "files": [{"path": "b.py", %s}]' % (blob, blob),
        '"files": [{"path": "a.py", "pad": "%s", %s}]' % ("x" * 5000, blob),
        '"files": [%s]' % ", ".join('{"path": "f%d.py", %s}' % (i, blob) for i in range(65)),
        '"files": [{"path": "a.py", %s}' % blob,
    ):
        text = ("{%s, %s}" % (head, files)).encode()
        raises(bundle.BundleError, _manifest, text)
    assert _manifest(('{%s, "files": [{"path": "a.py", %s}]}' % (head, blob)).encode())


def test_a_manifest_read_otherwise_than_json_reads_it_is_refused():
    """What the device takes from the manifest is what a JSON parser takes from it:
    strings or stray commas among the entries, and keys that only look like "files"
    once escapes are read, are refused."""
    blob = '"size": 1, "sha256": "%s"' % _hex(b"x")
    a = '{"path": "a.py", %s}' % blob
    b = '{"path": "b.py", %s}' % blob
    head = '"format": 2, "key_id": "", "version": "1.0"'
    for files in (
        # a string among the entries would put its text in the rest of the manifest
        '"files": [%s, "],", "version", ":", "9.9.9", ",", "z", ":["]' % a,
        '"files": [,%s]' % a,
        '"files": [%s,]' % a,
        '"files": [%s,,%s]' % (a, b),
        '"files": [%s %s]' % (a, b),
        # "a\"files" is not "files", and "fil\u0065s" is "files" only to JSON
        '"a\\"files": [%s], "fil\\u0065s": []' % a,
        '"fil\\u0065s": [%s]' % a,
    ):
        text = ("{%s, %s}" % (files, head)).encode()
        raises(bundle.BundleError, _manifest, text)
    assert _manifest(("{%s, %s}" % ('"files": [ %s ,\n %s ]' % (a, b), head)).encode())


def test_a_file_and_the_mpy_of_another_may_not_share_a_name():
    blob = '"size": 1, "sha256": "%s"' % _hex(b"x")
    variant = '{"micropython": ["1.29"], %s}' % blob
    text = (
        '{"format": 2, "key_id": "", "version": "1", "files": ['
        '{"path": "a.py", %s, "mpy": [%s]}, {"path": "a.mpy", %s}]}' % (blob, variant, blob)
    ).encode()
    assert "a.mpy is listed twice" in str(raises(bundle.BundleError, _manifest, text))

from fwtest_helpers import Sink, Stream, raises
from iotfw import bundle


def test_bundle_round_trip():
    files = [("iotfw/__init__.py", b'VERSION = "1.1.0"\n'), ("main.py", b"x" * 3000)]
    data = bundle.build("1.1.0", files)
    sink = Sink()
    version, paths = bundle.unpack(Stream(data), sink, chunk=512)
    assert version == "1.1.0"
    assert paths == ["iotfw/__init__.py", "main.py"]
    assert sink.files["main.py"] == b"x" * 3000


def test_bad_bundles_are_refused():
    good = bundle.build("2", [("a.py", b"abc")])
    for data in (
        b"",
        b"ZIP\n",
        good[:-2],
        good[:-6],
        b"IOTPFW1 2\nF ../etc/passwd 1\nx\nE\n",
        b"IOTPFW1 2\nF /abs 1\nx\nE\n",
        b"IOTPFW1 2\nG a 1\nx\nE\n",
    ):
        raises(bundle.BundleError, bundle.unpack, Stream(data), Sink())
    raises(bundle.BundleError, bundle.build, "bad version", [])
    raises(bundle.BundleError, bundle.build, "1", [("a/../b", b"")])


def test_valid_path():
    assert bundle.valid_path("iotfw/mqtt.py")
    for bad in ("", "/x", "a//b", "a/./b", "a b", "..", "x" * 129):
        assert not bundle.valid_path(bad)

"""The platform's bundle builder (iotp.services.manifest) produces what the firmware's
side (firmware/iotfw/bundle.py, ota.py, install.py) reads, checks and unpacks; signatures made with
`cryptography` verify with the firmware's own Ed25519; a tampered bundle, a foreign key,
a missing key file and a downgrade are refused, and a rotation changes the trusted key
only once the new version is confirmed."""

from __future__ import annotations

import io
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iotp.services.manifest import (
    MAX_ENTRY,
    BundleFile,
    BundleFormatError,
    build,
    parse,
    public_bytes,
)
from iotp.services.signing import device_key_file
from iotp.simulator.bundle import build_firmware_bundle
from tests.control_support import TEST_SIGNING_KEY
from tests.firmware.fwlink import fw

KEY_FILE = device_key_file(public_bytes(TEST_SIGNING_KEY.public_key()))


class Storage:
    """The file part of the HAL, in memory."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = dict(files or {})

    def read_file(self, path: str) -> bytes | None:
        return self.files.get(path)

    def write_file(self, path: str, data: bytes | list[bytes]) -> None:
        self.files[path] = b"".join(data) if isinstance(data, list) else bytes(data)

    def open_write(self, path: str) -> Any:
        files = self.files

        class Out(io.BytesIO):
            def close(self) -> None:
                files[path] = self.getvalue()
                super().close()

        return Out()


def staged(
    data: bytes, storage: Storage, version: str, **params: Any
) -> tuple[Any, dict[str, Any]]:
    """The bundle as the device checks it: (bundle.Bundle, its manifest)."""
    state = fw("ota").load(storage)
    got: tuple[Any, dict[str, Any]] = fw("install")._check(
        storage, state, io.BytesIO(data), {"version": version, **params}
    )
    return got


def check(data: bytes, storage: Storage, version: str, **params: Any) -> dict[str, Any]:
    return staged(data, storage, version, **params)[1]


def refusal(data: bytes, storage: Storage, version: str, **params: Any) -> str:
    with pytest.raises(fw("ota").OTAError) as info:
        check(data, storage, version, **params)
    return str(info.value)


def test_bundle_of_the_firmware_unpacks_with_the_new_version() -> None:
    data = build_firmware_bundle("2.0.0", key=TEST_SIGNING_KEY)
    bundle, manifest = staged(data, Storage({"ota_key.json": KEY_FILE}), "2.0.0")
    assert manifest["version"] == "2.0.0"
    storage = Storage()
    paths = bundle.unpack(io.BytesIO(data), storage.open_write)
    assert "iotfw/device.py" in paths
    assert "iotfw/ed25519.py" in paths
    assert b'VERSION = "2.0.0"' in storage.files["iotfw/__init__.py"]


def test_only_bundles_signed_with_the_trusted_key_pass() -> None:
    storage = Storage({"ota_key.json": KEY_FILE})
    good = build("1.1.0", [BundleFile("main.py", b"print(1)")])
    assert check(good.sign(TEST_SIGNING_KEY).to_bytes(), storage, "1.1.0")["version"] == "1.1.0"
    assert "unsigned bundle refused" in refusal(good.to_bytes(), storage, "1.1.0")
    other = Ed25519PrivateKey.generate()
    message = refusal(good.sign(other).to_bytes(), storage, "1.1.0")
    assert f"signed with key {good.sign(other).key_id} refused" in message
    signed = good.sign(TEST_SIGNING_KEY).to_bytes()
    tampered = signed.replace(b'"1.1.0"', b'"1.1.1"', 1)
    assert "bad signature" in refusal(tampered, storage, "1.1.1")
    assert "expected 1.2.0" in refusal(signed, storage, "1.2.0")
    # no key file, or a broken one: nothing is installed
    for files in ({}, {"ota_key.json": b"{broken"}, {"ota_key.json": b'{"key": "abc"}'}):
        assert "no signing key" in refusal(signed, Storage(files), "1.1.0")
    # development devices flashed to allow unsigned bundles
    dev = Storage({"ota_key.json": b'{"allow_unsigned": true}'})
    assert check(good.to_bytes(), dev, "1.1.0")["key_id"] == ""


def test_downgrade_needs_allow_downgrade() -> None:
    storage = Storage({"ota_key.json": KEY_FILE})
    running = fw("").VERSION
    old = build("0.0.1", [BundleFile("main.py", b"x")]).sign(TEST_SIGNING_KEY).to_bytes()
    assert f"downgrade from {running} to 0.0.1 refused" in refusal(old, storage, "0.0.1")
    assert check(old, storage, "0.0.1", allow_downgrade=True)["version"] == "0.0.1"


def test_rotation_happens_when_the_new_version_is_confirmed() -> None:
    ota = fw("ota")
    nxt = Ed25519PrivateKey.generate()
    storage = Storage({"ota_key.json": KEY_FILE})
    bundle = build("9.0.0", [BundleFile("main.py", b"x")]).sign(
        TEST_SIGNING_KEY, next_key=public_bytes(nxt.public_key())
    )
    manifest = check(bundle.to_bytes(), storage, "9.0.0")
    state = ota.load(storage)
    state["trial"] = {
        "id": "c",
        "version": "9.0.0",
        "previous": "",
        "boots": 0,
        "next_key": manifest["next_key"],
    }
    rolled = dict(state, trial=dict(state["trial"]))
    ota.rollback(rolled)
    ota.save(storage, rolled)
    assert ota.trusted_key(storage)[0] == public_bytes(TEST_SIGNING_KEY.public_key())
    ota.confirm(state)
    ota.save(storage, state)
    assert ota.trusted_key(storage) == (public_bytes(nxt.public_key()), False)
    assert "rotate" not in ota.load(storage)
    later = build("9.1.0", [BundleFile("main.py", b"y")])
    assert "refused" in refusal(later.sign(TEST_SIGNING_KEY).to_bytes(), storage, "9.1.0")
    assert check(later.sign(nxt).to_bytes(), storage, "9.1.0")["version"] == "9.1.0"


def test_mpy_variants_from_the_platform_builder() -> None:
    bundle = build(
        "3.0.0",
        [BundleFile("iotfw/x.py", b"source", mpy=[(["1.24", "1.25"], b"MPY")])],
    ).sign(TEST_SIGNING_KEY)
    data = bundle.to_bytes()
    assert parse(data).manifest["files"][0]["mpy"][0]["micropython"] == ["1.24", "1.25"]
    checked, _ = staged(data, Storage({"ota_key.json": KEY_FILE}), "3.0.0")
    for version, expected in (
        ("1.25.2", {"iotfw/x.mpy": b"MPY"}),
        (None, {"iotfw/x.py": b"source"}),
    ):
        storage = Storage()
        checked.unpack(io.BytesIO(data), storage.open_write, version)
        assert storage.files == expected


def test_platform_parse_refuses_what_the_device_would() -> None:
    signed = build("1.0.0", [BundleFile("main.py", b"abc")]).sign(TEST_SIGNING_KEY).to_bytes()
    assert parse(signed).key_id is not None
    head, rest = signed.split(b"\n", 1)
    spaced = rest.replace(b'"format":2', b'"format": 2', 1)
    size = int(head.split(b" ")[1]) + 1
    for data, reason in (
        (signed[:-1] + b"X", "does not match"),
        (signed + b"X", "after the last file"),
        (signed.replace(b'"1.0.0"', b'"1.0.1"'), "bad signature"),
        (b"IOTPFW2 %d 96\n" % size + spaced, "canonical"),
        (b"IOTPFW2 10 5\n", "signature must be"),
    ):
        with pytest.raises(BundleFormatError, match=reason):
            parse(data)


def test_an_entry_longer_than_a_device_reads_is_refused() -> None:
    """The device parses one file entry at a time, each at most MAX_ENTRY bytes of
    text: the platform builds and accepts no bundle with a longer one."""
    variants = [([f"1.{i}"], b"M%d" % i) for i in range(40)]
    with pytest.raises(BundleFormatError, match="longer than 4096"):
        build("1.0.0", [BundleFile("iotfw/x.py", b"src", mpy=variants)])
    assert build("1.0.0", [BundleFile("iotfw/x.py", b"src", mpy=variants[:20])])
    assert fw("bundle").MAX_ENTRY == MAX_ENTRY


def test_a_file_and_the_mpy_of_another_may_not_share_a_name() -> None:
    """a.py with a variant is installed as a.mpy on a device of that version: a
    separate a.mpy would be written over it."""
    with pytest.raises(BundleFormatError, match=r"a\.mpy is listed twice"):
        build(
            "1.0.0",
            [BundleFile("a.py", b"src", mpy=[(["1.29"], b"M")]), BundleFile("a.mpy", b"M2")],
        )


class Flash(Storage):
    """Storage with what installing at boot also uses."""

    def open_read(self, path: str) -> io.BytesIO:
        data = self.files.get(path)
        if data is None:
            raise OSError(2, path)
        return io.BytesIO(data)

    def size(self, path: str) -> int:
        return len(self.files[path])

    def remove(self, path: str) -> None:
        self.files.pop(path, None)

    def remove_tree(self, path: str) -> None:
        for name in [n for n in self.files if n.startswith(path + "/")]:
            del self.files[name]


def _staged(data: bytes, tries: int = 0) -> Flash:
    """A device that downloaded data and rebooted to install it."""
    flash = Flash({"ota_key.json": KEY_FILE, "ota.tmp": data})
    ota = fw("ota")
    state = ota.load(flash)
    state["staged"] = {"id": "c-1", "version": "2.0.0", "allow_downgrade": False, "tries": tries}
    ota.save(flash, state)
    return flash


def test_a_staged_update_installs_at_boot_and_goes_on_trial() -> None:
    flash = _staged(build_firmware_bundle("2.0.0", key=TEST_SIGNING_KEY))
    lines: list[str] = []
    assert fw("install").install_staged(flash, log=lines.append) is True
    state = fw("ota").load(flash)
    assert state["active"] == "slot_a"
    assert state["versions"]["slot_a"] == "2.0.0"
    assert state["trial"]["id"] == "c-1"
    assert state["staged"] is None
    assert "ota.tmp" not in flash.files
    assert "slot_a/iotfw/__init__.py" in flash.files
    assert fw("install").install_staged(flash, log=lines.append) is False  # nothing staged


def test_a_staged_update_refused_at_boot_is_reported_and_changes_nothing() -> None:
    good = build_firmware_bundle("2.0.0", key=TEST_SIGNING_KEY)
    forged = good.replace(b'"version":"2.0.0"', b'"version":"2.0.1"', 1)
    flash = _staged(forged)
    flash.files["ota.json"] = flash.files["ota.json"].replace(b'"2.0.0"', b'"2.0.1"')
    assert fw("install").install_staged(flash, log=lambda line: None) is False
    state = fw("ota").load(flash)
    assert state["active"] == ""
    assert state["staged"] is None
    assert state["results"] == [
        {"id": "c-1", "status": "error", "version": "2.0.1", "error": state["results"][0]["error"]}
    ]
    assert state["results"][0]["error"].startswith("bad signature")
    assert "ota.tmp" not in flash.files
    assert not [name for name in flash.files if name.startswith("slot_")]


def test_an_install_cut_off_at_every_boot_is_given_up() -> None:
    # each boot counts its try before installing: a power cut or a crash while
    # installing leaves the count, and after three such boots the next gives it up
    flash = _staged(build_firmware_bundle("2.0.0", key=TEST_SIGNING_KEY), tries=3)
    assert fw("install").install_staged(flash, log=lambda line: None) is False
    state = fw("ota").load(flash)
    assert state["active"] == ""
    assert state["results"][0]["error"] == "installing did not finish in 3 boots"
    assert "ota.tmp" not in flash.files

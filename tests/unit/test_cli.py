from __future__ import annotations

import hashlib
import json
from pathlib import Path

from typer.testing import CliRunner

from iotp.cli import app
from iotp.services.manifest import key_id, parse, public_bytes
from iotp.services.signing import load_key, server_keys


def test_firmware_bundle_writes_a_bundle_and_prints_its_hash(tmp_path: Path) -> None:
    out = tmp_path / "fw.bin"
    result = CliRunner().invoke(app, ["firmware", "bundle", "1.2.3", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert parse(data).version == "1.2.3"
    assert parse(data).key_id is None
    assert hashlib.sha256(data).hexdigest() in result.output


def test_firmware_keys_sign_and_device_key_file(tmp_path: Path) -> None:
    """keygen (offline and the server's, never overwriting), sign offline with a rotation,
    pubkey for the device's flash."""
    run = CliRunner().invoke
    offline, nxt, bundle = tmp_path / "offline.pem", tmp_path / "next.pem", tmp_path / "fw.bin"
    assert run(app, ["firmware", "keygen", "--output", str(offline)]).exit_code == 0
    again = run(app, ["firmware", "keygen", "--output", str(offline)])
    assert again.exit_code == 2
    assert "never overwritten" in again.output
    assert run(app, ["firmware", "keygen", "--output", str(nxt)]).exit_code == 0
    assert run(app, ["firmware", "bundle", "2.0.0", str(bundle)]).exit_code == 0
    result = run(
        app, ["firmware", "sign", str(bundle), "--key", str(offline), "--next-key", str(nxt)]
    )
    assert result.exit_code == 0, result.output
    signed = parse(bundle.read_bytes())
    offline_public = public_bytes(load_key(offline).public_key())
    next_public = public_bytes(load_key(nxt).public_key())
    assert signed.key_id == key_id(offline_public)
    assert signed.next_key == next_public.hex()
    assert f"signed with key {signed.key_id}" in result.output
    result = run(app, ["firmware", "pubkey", "--key", str(offline)])
    assert json.loads(result.output) == {
        "key": offline_public.hex(),
        "key_id": key_id(offline_public),
        "allow_unsigned": False,
    }
    # the server's keys live in the data dir; a rotation promotes the next one
    data_dir = tmp_path / "data"
    first = run(app, ["firmware", "keygen", "--data-dir", str(data_dir)])
    assert first.exit_code == 0, first.output
    assert run(app, ["firmware", "keygen", "--data-dir", str(data_dir)]).exit_code == 2
    assert run(app, ["firmware", "keygen", "--promote", "--data-dir", str(data_dir)]).exit_code == 2
    assert run(app, ["firmware", "keygen", "--next", "--data-dir", str(data_dir)]).exit_code == 0
    promoted = run(app, ["firmware", "keygen", "--promote", "--data-dir", str(data_dir)])
    assert promoted.exit_code == 0, promoted.output
    current, pending = server_keys(data_dir)
    assert pending is None
    assert current is not None
    assert key_id(public_bytes(current.public_key())) in promoted.output
    assert len(list((data_dir / "signing").glob("retired-*.pem"))) == 1
    bad = run(app, ["firmware", "sign", str(bundle), "--key", str(tmp_path / "missing.pem")])
    assert bad.exit_code == 2
    assert "no signing key" in bad.output


def test_help_lists_every_component() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "worker", "api", "broker", "simulate", "db", "firmware"):
        assert command in result.output

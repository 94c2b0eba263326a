from __future__ import annotations

import hashlib
from pathlib import Path

from typer.testing import CliRunner

from iotp.cli import app


def test_firmware_bundle_writes_a_bundle_and_prints_its_hash(tmp_path: Path) -> None:
    out = tmp_path / "fw.bin"
    result = CliRunner().invoke(app, ["firmware", "bundle", "1.2.3", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(b"IOTPFW1 1.2.3")
    assert hashlib.sha256(data).hexdigest() in result.output


def test_help_lists_every_component() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "worker", "api", "broker", "simulate", "db", "firmware"):
        assert command in result.output

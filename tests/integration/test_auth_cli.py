"""`iotp user ...` against a SQLite file, and the CLI refusing weak secrets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iotp.cli import app
from iotp.settings import get_settings


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("IOTP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IOTP_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_user_commands(env: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(
        app, ["user", "create", "alice", "--role", "operator", "--password", "alice-pw-1"]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["user", "create", "bob", "--generate"])
    assert r.exit_code == 0, r.output
    generated = r.output.split("password: ")[1].strip()
    assert len(generated) >= 16
    r = runner.invoke(app, ["user", "create", "alice", "--password", "alice-pw-2"])
    assert r.exit_code == 1
    assert "exists" in r.output
    r = runner.invoke(app, ["user", "create", "carol", "--password", "short"])
    assert r.exit_code == 1
    r = runner.invoke(app, ["user", "list"])
    assert "alice" in r.output
    assert "operator" in r.output
    assert "bob" in r.output
    assert "argon2" not in r.output
    r = runner.invoke(app, ["user", "set-password", "alice"], input="new-password\nnew-password\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["user", "delete", "bob"])
    assert r.exit_code == 0
    assert "bob" not in runner.invoke(app, ["user", "list"]).output
    assert runner.invoke(app, ["user", "delete", "nobody"]).exit_code == 1


def test_secure_mode_refuses_weak_secrets_with_a_clear_error(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IOTP_SECURE", "true")
    monkeypatch.setenv("IOTP_SECRET_KEY", "changeme")
    r = CliRunner().invoke(app, ["user", "list"])
    assert r.exit_code == 2
    assert "IOTP_SECRET_KEY" in r.output
    assert "Traceback" not in r.output

"""The simulator's secure-mode options: what is checked before any device starts, and
what a device keeps across runs (tests/integration/test_provisioning*.py run them
against a secure platform)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iotp.cli import app
from iotp.simulator import Fleet, SimulatorError


def test_a_ca_needs_an_mqtts_url_and_a_readable_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n...\n")
    with pytest.raises(SimulatorError, match="mqtts://"):
        Fleet(devices=1, broker_url="mqtt://127.0.0.1:1883", ca_file=ca)
    with pytest.raises(SimulatorError, match="cannot read"):
        Fleet(devices=1, broker_url="mqtts://127.0.0.1:8883", ca_file=tmp_path / "missing.crt")
    result = CliRunner().invoke(app, ["simulate", "--devices", "1", "--ca", str(ca)])
    assert result.exit_code == 2
    assert "mqtts://" in result.output


def test_credentials_file_must_be_an_object_of_secrets(tmp_path: Path) -> None:
    bad = tmp_path / "creds.json"
    bad.write_text('["A1", "secret"]')
    result = CliRunner().invoke(app, ["simulate", "--devices", "1", "--credentials", str(bad)])
    assert result.exit_code == 2
    assert "JSON object" in result.output


def test_initial_config_carries_secrets_state_and_issued_credentials(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fleet = Fleet(devices=2, broker_url="mqtts://broker.example", fleet_secret="f" * 20)
    first, second = (sim.node_id for sim in fleet.devices)
    state.mkdir()
    (state / f"{first}.json").write_text(
        json.dumps({"mqtt_user": first, "mqtt_password": "p" * 20, "provision_secret": "", "x": 1})
    )
    fleet = Fleet(
        devices=2,
        broker_url="mqtts://broker.example",
        fleet_secret="f" * 20,
        credentials={second: "issued-secret-0123456789"},
        state_dir=state,
    )
    cfg1 = json.loads(fleet.devices[0].hal.files["config.json"])
    cfg2 = json.loads(fleet.devices[1].hal.files["config.json"])
    assert cfg1["fleet_secret"] == "f" * 20
    assert cfg1["mqtt_tls"] is True
    assert cfg1["mqtt_port"] == 8883
    assert (cfg1["mqtt_user"], cfg1["mqtt_password"]) == (first, "p" * 20)
    assert "x" not in cfg1
    assert (cfg2["mqtt_user"], cfg2["mqtt_password"]) == (second, "issued-secret-0123456789")
    # what the firmware stores goes to the state file, secrets and all, readable by us only
    hal = fleet.devices[1].hal
    hal.write_file("config.json", json.dumps(dict(cfg2, provision_secret="")).encode())
    path = state / f"{second}.json"
    assert json.loads(path.read_text())["mqtt_password"] == "issued-secret-0123456789"
    assert path.stat().st_mode & 0o077 == 0

"""What a device without info shows it has, and a rollout device that its own status
message moved (pure logic, no services)."""

from __future__ import annotations

from iotp.services.devices import capabilities_in_data, capabilities_in_state
from iotp.services.rollouts import DeviceStatus, derive_device_status


def test_data_shows_its_metrics() -> None:
    assert capabilities_in_data({"temperature": 1.0, "gas": 2.0}) == {"temperature", "gas"}
    assert capabilities_in_data({"x" * 65: 1.0}) == set()


def test_state_shows_relays_and_servo_only() -> None:
    state = {"relays": {"light": True, "fan": False}, "servo": 90, "config": {"interval": 2}}
    assert capabilities_in_state(state) == {"relay:light", "relay:fan", "servo"}
    assert capabilities_in_state({"relays": ["light"], "servo": True}) == set()
    assert capabilities_in_state({"relays": {"r" * 59: True}}) == set()  # over 64 with relay:
    assert capabilities_in_state({}) == set()


def _derive(current: str, progress: dict[str, str] | None = None) -> object:
    return derive_device_status(
        current=current,
        command_status="sent",
        command_error=None,
        progress=progress,
        result=None,
        device_firmware=None,
        target="2.0.0",
    )


def test_a_sent_command_does_not_take_back_downloading() -> None:
    assert _derive(DeviceStatus.DOWNLOADING) is None
    assert _derive(DeviceStatus.PENDING).status == DeviceStatus.SENT  # type: ignore[attr-defined]
    moved = _derive(DeviceStatus.SENT, {"stage": "verify"})
    assert moved.status == DeviceStatus.DOWNLOADING  # type: ignore[attr-defined]

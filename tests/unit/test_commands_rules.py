"""Device control, pure parts: the command state machine, capability validation,
shadow delta, rollout per-device status and pacing."""

from __future__ import annotations

import pytest

from iotp.errors import InvalidRequestError
from iotp.protocol.events import CommandStatus
from iotp.services import commands as c
from iotp.services import rollouts as r
from iotp.services import shadow as s

CAPS = ["relay:light", "relay:fan", "servo", "reboot", "ota", "automation", "webhook", "cmd:blink"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("queued", "sending"),
        ("queued", "expired"),
        ("queued", "cancelled"),
        ("sending", "sent"),  # the broker's PUBACK
        ("sending", "queued"),  # unconfirmed publish, or its publisher died: sent again
        ("sending", "acked"),  # the ack beat the PUBACK
        ("sending", "failed"),
        ("sent", "acked"),
        ("sent", "failed"),
        ("sent", "timed_out"),
    ],
)
def test_allowed_transitions(old: str, new: str) -> None:
    c.check_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("queued", "acked"),
        ("queued", "sent"),  # never without a claim (sending) first
        ("sending", "cancelled"),
        ("sending", "timed_out"),
        ("sent", "cancelled"),
        ("sent", "expired"),
        ("acked", "failed"),
        ("timed_out", "acked"),
        ("cancelled", "sent"),
        ("expired", "sent"),
    ],
)
def test_forbidden_transitions(old: str, new: str) -> None:
    with pytest.raises(c.InvalidTransition):
        c.check_transition(old, new)


def test_the_sql_conditions_come_from_the_table() -> None:
    """Each status's possible predecessors, as every UPDATE in services.commands uses them."""
    assert c.sources(CommandStatus.SENDING) == {"queued"}  # claim
    assert c.sources(CommandStatus.SENT) == {"sending"}  # PUBACK
    assert c.sources(CommandStatus.QUEUED) == {"sending"}  # release, stale claim
    assert c.sources(CommandStatus.ACKED) == {"sending", "sent"}  # final ack
    assert c.sources(CommandStatus.FAILED) == {"sending", "sent"}
    assert c.sources(CommandStatus.TIMED_OUT) == {"sent"}  # sweep
    assert c.sources(CommandStatus.EXPIRED) == {"queued"}
    assert c.sources(CommandStatus.CANCELLED) == {"queued"}
    for status in c.TERMINAL:  # nothing leaves an end: a late ack cannot reopen one
        assert status not in c.TRANSITIONS
        assert not any(status in c.sources(s) for s in CommandStatus)


def test_terminal_states() -> None:
    assert {x.value for x in c.TERMINAL} == {"acked", "failed", "timed_out", "expired", "cancelled"}
    assert not c.is_terminal("queued")
    assert not c.is_terminal("sent")


@pytest.mark.parametrize(
    ("command", "params", "expected"),
    [
        ("relay", {"name": "light", "state": "ON"}, ("relay", {"name": "light", "state": "on"})),
        ("relay", {"name": "fan", "state": True}, ("relay", {"name": "fan", "state": "on"})),
        ("servo", {"angle": 180}, ("servo", {"angle": 180})),
        ("servo", {"angle": 0.0}, ("servo", {"angle": 0})),
        ("reboot", {}, ("reboot", {})),
        ("ping", {}, ("ping", {})),
        ("set_config", {"interval": 5}, ("set_config", {"interval": 5})),
        ("automation", {"light_on": "18:30"}, ("automation", {"light_on": "18:30"})),
        ("custom", {"name": "blink", "times": 3}, ("blink", {"times": 3})),
        ("blink", {"times": 3}, ("blink", {"times": 3})),
    ],
)
def test_valid_commands(command: str, params: dict, expected: tuple) -> None:  # type: ignore[type-arg]
    assert c.validate(command, params, CAPS) == expected


@pytest.mark.parametrize(
    ("command", "params", "caps", "reason"),
    [
        ("servo", {"angle": 181}, CAPS, "0..180"),
        ("servo", {"angle": -1}, CAPS, "0..180"),
        ("servo", {"angle": "90"}, CAPS, "integer"),
        ("servo", {"angle": True}, CAPS, "integer"),
        ("servo", {"angle": 90}, ["relay:light"], "capability 'servo'"),
        ("relay", {"name": "pump", "state": "on"}, CAPS, "no relay 'pump'"),
        ("relay", {"name": "light"}, CAPS, "state"),
        ("relay", {"name": "light", "state": "on", "x": 1}, CAPS, "unknown parameter"),
        ("reboot", {"delay": 99999}, CAPS, "delay"),
        ("set_config", {}, CAPS, "at least one"),
        ("set_config", {"interval": 0.1}, CAPS, "interval"),
        ("automation", {"light_on": "25:00"}, CAPS, "HH:MM"),
        ("automation", {"fan_hum_on": 150}, CAPS, "0..100"),
        ("automation", {"fan_temp_on": 20, "fan_temp_off": 25}, CAPS, ">="),
        ("automation", {"bogus": 1}, CAPS, "unknown parameter"),
        ("ota", {"url": "ftp://x", "sha256": "0" * 64, "version": "2"}, CAPS, "url"),
        ("ota", {"url": "http://x", "sha256": "xyz", "version": "2"}, CAPS, "sha256"),
        ("webhook", {"events": ["nope"]}, CAPS, "events"),
        ("custom", {"name": "dance"}, CAPS, "cmd:dance"),
        ("custom", {"name": "relay"}, CAPS, "built-in"),
        ("launch", {}, CAPS, "unknown command"),
    ],
)
def test_invalid_commands_say_why(
    command: str,
    params: dict,  # type: ignore[type-arg]
    caps: list[str],
    reason: str,
) -> None:
    with pytest.raises(InvalidRequestError, match=reason):
        c.validate(command, params, caps)


@pytest.mark.parametrize(
    ("command", "params", "expected"),
    [
        ("relay", {"name": "pump", "state": "ON"}, ("relay", {"name": "pump", "state": "on"})),
        ("servo", {"angle": 90}, ("servo", {"angle": 90})),
        ("reboot", {}, ("reboot", {})),
        ("custom", {"name": "beep", "n": 2}, ("beep", {"n": 2})),
        # what needs no capability on any device needs none here either
        ("ping", {}, ("ping", {})),
    ],
)
def test_unknown_capabilities_allow_the_standard_commands(
    command: str,
    params: dict,  # type: ignore[type-arg]
    expected: tuple,  # type: ignore[type-arg]
) -> None:
    assert c.validate(command, params, None) == expected


@pytest.mark.parametrize(
    ("command", "params", "reason"),
    [
        ("servo", {"angle": 181}, "0..180"),
        ("relay", {"name": "light"}, "state"),
        ("custom", {"name": "relay"}, "built-in"),
        ("ota", {"url": "http://x", "sha256": "0" * 64, "version": "2"}, "unknown"),
        ("beep", {}, "unknown"),
    ],
)
def test_unknown_capabilities_still_check_shapes(
    command: str,
    params: dict,  # type: ignore[type-arg]
    reason: str,
) -> None:
    with pytest.raises(InvalidRequestError, match=reason):
        c.validate(command, params, None)


def test_limits() -> None:
    c.check_limits(10, 60)
    with pytest.raises(InvalidRequestError, match="timeout"):
        c.check_limits(0, 60)
    with pytest.raises(InvalidRequestError, match="ttl"):
        c.check_limits(10, -1)


def test_shadow_delta_and_commands() -> None:
    desired = {
        "relays": {"light": True, "fan": False},
        "servo": 90,
        "automation": {"fan_temp_on": 29.0, "light_on": "18:00"},
        "config": {"interval": 5},
    }
    reported = {
        "relays": {"light": False, "fan": False},
        "servo": 90,
        "automation": {"fan_temp_on": 28.0, "light_on": "18:00"},
        "config": {"interval": 2},
    }
    diff = s.delta(desired, reported)
    assert diff == {
        "relays": {"light": True},
        "automation": {"fan_temp_on": 29.0},
        "config": {"interval": 5},
    }
    assert s.commands_for(diff) == [
        ("relay", {"name": "light", "state": "on"}),
        ("automation", {"fan_temp_on": 29.0}),
        ("set_config", {"interval": 5}),
    ]
    converged = {
        "relays": {"light": True, "fan": False},
        "servo": 90,
        "automation": {"fan_temp_on": 29, "light_on": "18:00"},
        "config": {"interval": 5.0},
    }
    assert s.delta(desired, converged) == {}
    assert s.delta({"servo": 10}, None) == {"servo": 10}
    assert s.delta({"relays": {"light": True}}, {"relays": {"light": 1}}) != {}  # bool is bool


def test_shadow_validation_and_merge() -> None:
    assert s.validate_desired({"relays": {"light": None}}, CAPS) == {}
    with pytest.raises(InvalidRequestError, match="unknown key"):
        s.validate_desired({"colour": 1}, CAPS)
    with pytest.raises(InvalidRequestError, match=r"0\.\.180"):
        s.validate_desired({"servo": 181}, CAPS)
    merged = s.merge_patch(
        {"relays": {"light": True}, "servo": 5}, {"relays": {"fan": True}, "servo": None}
    )
    assert merged == {"relays": {"light": True, "fan": True}}


@pytest.mark.parametrize(
    ("cmd", "error", "progress", "result", "fw", "expected"),
    [
        (None, None, None, None, "2.0", "installed"),  # info shows the version
        ("queued", None, None, None, "1.0", None),
        ("sent", None, None, None, "1.0", "sent"),
        ("sent", None, {"stage": "downloading"}, None, "1.0", "downloading"),
        ("acked", None, None, {"version": "2.0"}, "1.0", "installed"),
        ("acked", None, None, {"version": "1.9"}, "1.0", "failed"),
        ("failed", "rolled_back", None, None, "1.0", "rolled_back"),
        ("failed", "sha256 mismatch", None, None, "1.0", "failed"),
        ("timed_out", None, None, None, "1.0", "failed"),
        ("expired", None, None, None, "1.0", "pending"),
    ],
)
def test_rollout_device_status(
    cmd: str | None,
    error: str | None,
    progress: dict | None,
    result: object,
    fw: str,
    expected: str | None,  # type: ignore[type-arg]
) -> None:
    new = r.derive_device_status(
        current="pending",
        command_status=cmd,
        command_error=error,
        progress=progress,
        result=result,
        device_firmware=fw,
        target="2.0",
    )
    assert (new.status if new else None) == expected


def test_rollout_pacing_and_threshold() -> None:
    n, base = r.starts_due(now=100.0, next_start_at=100.0, rate_per_minute=60)
    assert n == 1
    assert base == 100.0
    n, _ = r.starts_due(now=100.0, next_start_at=101.0, rate_per_minute=60)
    assert n == 0
    n, base = r.starts_due(now=1000.0, next_start_at=0.0, rate_per_minute=60)
    assert n == 2  # no catch-up burst after idling
    n, _ = r.starts_due(now=100.0, next_start_at=0.0, rate_per_minute=6000)
    assert 100 <= n <= 101  # one second's worth at 100/s
    assert r.failure_limit(0.1, 50) == 5
    assert r.failure_limit(0.01, 10) == 1

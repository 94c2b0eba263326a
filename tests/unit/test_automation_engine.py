"""Rule evaluation without I/O: crossing, hysteresis, duration, cooldown, rate, presence,
events, conditions, and the dry-run replay."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from iotp.automation.engine import CLEAR, FIRE, Engine, Event, Sample, replay
from iotp.automation.spec import Rule, reading, render

T0 = 1_764_230_400.0  # 2025-11-27 08:00:00 UTC


def rule(trigger: dict[str, Any], rule_id: int = 1, **extra: Any) -> Rule:
    body: dict[str, Any] = {
        "id": rule_id,
        "name": f"r{rule_id}",
        "trigger": trigger,
        "actions": [{"type": "notify"}],
        "cooldown_seconds": 0,
    }
    body.update(extra)
    return Rule.model_validate(body)


def engine(*rules: Rule) -> Engine:
    e = Engine()
    e.load(rules)
    return e


def kinds(e: Engine) -> list[tuple[str, str | None, float]]:
    return [(f.kind, f.device_id, f.ts) for f in e.take()]


def feed(e: Engine, device: str, metric: str, values: list[float], step: float = 1.0) -> None:
    for i, v in enumerate(values):
        e.on_data(device, {metric: v}, T0 + i * step)


THRESHOLD = {"type": "threshold", "metric": "temperature", "op": "above", "value": 28}


def test_threshold_fires_on_crossing_not_on_every_sample() -> None:
    e = engine(rule(THRESHOLD))
    feed(e, "A", "temperature", [25, 27, 29, 30, 31, 30])
    assert kinds(e) == [(FIRE, "A", T0 + 2)]


def test_threshold_clears_and_rearms_without_hysteresis() -> None:
    e = engine(rule(THRESHOLD))
    feed(e, "A", "temperature", [29, 27, 29, 28, 29])
    # 28 is exactly the threshold: neither above nor below, so the state holds.
    assert kinds(e) == [(FIRE, "A", T0), (CLEAR, "A", T0 + 1), (FIRE, "A", T0 + 2)]


def test_hysteresis_stops_a_flapping_sensor() -> None:
    e = engine(rule({**THRESHOLD, "hysteresis": 2}))
    feed(e, "A", "temperature", [29, 27.5, 28.5, 26.5, 28.2, 25.9, 28.1])
    assert kinds(e) == [(FIRE, "A", T0), (CLEAR, "A", T0 + 5), (FIRE, "A", T0 + 6)]


def test_below_threshold_with_hysteresis() -> None:
    e = engine(
        rule({"type": "threshold", "metric": "t", "op": "below", "value": 5, "hysteresis": 1})
    )
    feed(e, "A", "t", [6, 4, 5.5, 4.5, 6.5])
    assert kinds(e) == [(FIRE, "A", T0 + 1), (CLEAR, "A", T0 + 4)]


def test_devices_are_independent() -> None:
    e = engine(rule(THRESHOLD))
    e.on_data("A", {"temperature": 30}, T0)
    e.on_data("B", {"temperature": 20}, T0)
    e.on_data("B", {"temperature": 30}, T0 + 1)
    e.on_data("A", {"temperature": 31}, T0 + 1)
    assert kinds(e) == [(FIRE, "A", T0), (FIRE, "B", T0 + 1)]


def test_duration_must_hold() -> None:
    e = engine(rule({**THRESHOLD, "for_seconds": 60}))
    feed(e, "A", "temperature", [30, 30, 27], step=20)  # above for 40 s, then below
    e.tick(T0 + 120)
    assert kinds(e) == []
    e.on_data("A", {"temperature": 30}, T0 + 200)
    e.tick(T0 + 259)
    assert kinds(e) == []
    e.on_data("A", {"temperature": 31}, T0 + 230)
    e.tick(T0 + 260)
    assert kinds(e) == [(FIRE, "A", T0 + 260)]
    e.on_data("A", {"temperature": 20}, T0 + 300)
    assert kinds(e) == [(CLEAR, "A", T0 + 300)]


def test_cooldown_per_rule_and_device() -> None:
    e = engine(rule(THRESHOLD, cooldown_seconds=60))
    feed(e, "A", "temperature", [30, 20, 30, 20, 30], step=20)  # crosses at 0, 40, 80
    e.on_data("B", {"temperature": 30}, T0 + 40)
    assert kinds(e) == [
        (FIRE, "A", T0),
        (CLEAR, "A", T0 + 20),
        (FIRE, "A", T0 + 80),
        (FIRE, "B", T0 + 40),
    ]
    assert e.counters["cooldown"] == 1


def test_clear_only_after_a_fire() -> None:
    e = engine(rule(THRESHOLD, cooldown_seconds=100))
    feed(e, "A", "temperature", [30, 20, 30, 20], step=10)
    assert kinds(e) == [(FIRE, "A", T0), (CLEAR, "A", T0 + 10)]


def test_scope_by_device_tags_and_type() -> None:
    e = engine(rule(THRESHOLD, scope={"tags": ["kitchen"], "device_type": "esp32-env"}))
    e.set_device("A", tags=["kitchen", "x"], type_="esp32-env")
    e.set_device("B", tags=["hall"], type_="esp32-env")
    e.set_device("C", tags=["kitchen"], type_="other")
    for d in "ABC":
        e.on_data(d, {"temperature": 30}, T0)
    assert kinds(e) == [(FIRE, "A", T0)]


def test_many_rules_on_one_metric() -> None:
    rules = [rule({**THRESHOLD, "value": v}, rule_id=v) for v in range(20, 30)]
    e = engine(*rules)
    feed(e, "A", "temperature", [19, 24.5, 24.7, 31])
    fired = [(f.rule_id, f.ts) for f in e.take()]
    assert fired == [(v, T0 + 1) for v in range(20, 25)] + [(v, T0 + 3) for v in range(25, 30)]


def test_reload_keeps_state_of_unchanged_rules() -> None:
    r = rule(THRESHOLD)
    e = engine(r)
    e.on_data("A", {"temperature": 30}, T0)
    e.load([r.model_copy(update={"name": "renamed"})])
    e.on_data("A", {"temperature": 31}, T0 + 1)
    e.on_data("A", {"temperature": 20}, T0 + 2)
    assert kinds(e) == [(FIRE, "A", T0), (CLEAR, "A", T0 + 2)]
    e.load([])
    e.on_data("A", {"temperature": 40}, T0 + 3)
    assert kinds(e) == []


def test_rate_of_change() -> None:
    e = engine(rule({"type": "rate", "metric": "gas", "op": "rises", "value": 100}))
    # +10 per second = 600/min: fires; then flat: clears
    feed(e, "A", "gas", [100, 101, 111, 121, 121], step=1)
    assert kinds(e) == [(FIRE, "A", T0 + 2), (CLEAR, "A", T0 + 4)]


def test_offline_for_and_back_online() -> None:
    e = engine(
        rule({"type": "offline", "for_seconds": 30}, rule_id=1),
        rule({"type": "online"}, rule_id=2),
    )
    e.on_event("device_status", "A", {"status": "offline", "previous": "online"}, T0)
    e.tick(T0 + 29)
    assert kinds(e) == []
    e.tick(T0 + 30)
    assert [(f.rule_id, f.kind) for f in e.take()] == [(1, FIRE)]
    e.on_event("device_status", "A", {"status": "online", "previous": "offline"}, T0 + 40)
    assert [(f.rule_id, f.kind) for f in e.take()] == [(1, CLEAR), (2, FIRE)]
    # Offline for less than 30 s: nothing (the online rule still fires).
    e.on_event("device_status", "A", {"status": "offline", "previous": "online"}, T0 + 100)
    e.on_event("device_status", "A", {"status": "online", "previous": "offline"}, T0 + 110)
    e.tick(T0 + 200)
    assert [(f.rule_id, f.kind) for f in e.take()] == [(2, FIRE)]


def test_registered_command_failed_and_alert_raised() -> None:
    e = engine(
        rule({"type": "registered"}, rule_id=1),
        rule({"type": "command_failed", "command": "relay"}, rule_id=2),
        rule({"type": "alert_raised", "min_severity": "critical"}, rule_id=3),
    )
    e.on_event("device_registered", "A", {"name": "x"}, T0)
    e.on_event("command_update", "A", {"status": "acked", "command": "relay"}, T0)
    e.on_event("command_update", "A", {"status": "timed_out", "command": "ping"}, T0)
    e.on_event("command_update", "A", {"status": "failed", "command": "relay"}, T0)
    e.on_event("alert", "A", {"action": "raised", "severity": "warning", "rule_id": 9}, T0)
    e.on_event("alert", "A", {"action": "raised", "severity": "critical", "rule_id": 9}, T0)
    e.on_event("alert", "A", {"action": "raised", "severity": "critical", "rule_id": 3}, T0)
    assert [f.rule_id for f in e.take()] == [1, 2, 3]


def test_condition_on_another_devices_latest_value() -> None:
    cond = {"type": "metric", "device_id": "HALL", "metric": "humidity", "op": ">=", "value": 60}
    e = engine(rule(THRESHOLD, conditions=[cond]))
    e.on_data("A", {"temperature": 30}, T0)  # no humidity seen yet
    e.on_data("HALL", {"humidity": 65}, T0 + 1)
    e.on_data("A", {"temperature": 20}, T0 + 2)
    e.on_data("A", {"temperature": 30}, T0 + 3)
    e.on_data("HALL", {"humidity": 50}, T0 + 4)
    e.on_data("A", {"temperature": 20}, T0 + 5)
    e.on_data("A", {"temperature": 30}, T0 + 6)
    assert kinds(e) == [(FIRE, "A", T0 + 3), (CLEAR, "A", T0 + 5)]
    assert e.counters["blocked_by_condition"] == 2


def test_condition_max_age() -> None:
    cond = {
        "type": "metric",
        "device_id": "H",
        "metric": "h",
        "op": ">",
        "value": 0,
        "max_age_seconds": 10,
    }
    e = engine(rule(THRESHOLD, conditions=[cond]))
    e.on_data("H", {"h": 1}, T0)
    e.on_data("A", {"temperature": 30}, T0 + 11)
    assert kinds(e) == []


def test_condition_device_tags() -> None:
    e = engine(rule(THRESHOLD, conditions=[{"type": "device", "tags": ["vip"]}]))
    e.set_device("A", tags=["vip"])
    e.set_device("B")
    e.on_data("A", {"temperature": 30}, T0)
    e.on_data("B", {"temperature": 30}, T0)
    assert kinds(e) == [(FIRE, "A", T0)]


def test_time_window_condition_across_midnight_in_a_time_zone() -> None:
    # 22:00-06:00 in New York (UTC-5 in November). T0 is 08:00 UTC = 03:00 New York.
    cond = {"type": "time", "after": "22:00", "before": "06:00", "timezone": "America/New_York"}
    e = engine(rule(THRESHOLD, conditions=[cond]))
    e.on_data("A", {"temperature": 30}, T0)  # 03:00 local: inside
    e.on_data("A", {"temperature": 20}, T0 + 1)
    e.on_data("A", {"temperature": 30}, T0 + 4 * 3600)  # 07:00 local: outside
    assert kinds(e) == [(FIRE, "A", T0), (CLEAR, "A", T0 + 1)]


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        rule({"type": "schedule", "at": "18:00", "cron": "* * * * *"})
    with pytest.raises(ValidationError, match="time zone"):
        rule({"type": "schedule", "at": "18:00", "timezone": "Mars/Olympus"})
    with pytest.raises(ValidationError, match="never clears"):
        rule({"type": "registered"}, actions=[{"type": "notify", "when": "clear"}])
    with pytest.raises(ValidationError, match="cron"):
        rule({"type": "schedule", "cron": "61 * * * *"})


def test_replay_shows_when_a_rule_would_have_fired() -> None:
    r = rule({**THRESHOLD, "for_seconds": 30}, cooldown_seconds=0)
    samples = [
        Sample(T0 + i * 10, "A", {"temperature": 30 if 3 <= i <= 8 else 20}) for i in range(15)
    ]
    events = [Event(T0 + 200, "device_status", "A", {"status": "offline"})]
    fired = replay(r, samples=samples, events=events, start=T0, end=T0 + 300)
    assert [(f.kind, f.ts) for f in fired] == [(FIRE, T0 + 60), (CLEAR, T0 + 90)]


def test_render_is_plain_substitution() -> None:
    text = render(
        "{rule}: {device} {metric}={value} {value.__class__} {missing}",
        {
            "rule": "gas",
            "device": "K",
            "metric": "gas",
            "value": 612.0,
        },
    )
    assert text == "gas: K gas=612 {value.__class__} {missing}"


def test_a_band_change_visits_exactly_the_thresholds_crossed() -> None:
    # Many thresholds on one metric (as with 100 rules): a jump across several fires each
    # of them once; moves that cross nothing (or cross other rules' bounds) change nothing.
    rules = [
        rule({**THRESHOLD, "value": v, "hysteresis": 1}, rule_id=i + 1, scope={"devices": ["A"]})
        for i, v in enumerate([20, 22, 24, 26, 28])
    ]
    e = engine(*rules)
    feed(e, "A", "temperature", [19, 25, 25.5, 27, 29, 23.5, 18])
    got = [(f.rule_id, f.kind) for f in e.take()]
    assert got == [
        (1, FIRE), (2, FIRE), (3, FIRE),  # 19 -> 25
        (4, FIRE),  # -> 27
        (5, FIRE),  # -> 29
        (4, CLEAR), (5, CLEAR),  # -> 23.5: below 25 and 27, not yet below 23 (rule 3)
        (1, CLEAR), (2, CLEAR), (3, CLEAR),  # -> 18
    ]  # fmt: skip
    feed(e, "B", "temperature", [19, 30])  # out of scope
    assert e.take() == []


def test_a_firing_carries_the_unit_and_the_message_reads_with_it() -> None:
    e = engine(rule({**THRESHOLD, "value": 30}))
    e.set_device("A", units={"temperature": "°F"})  # declared: over the default °C
    e.set_device("B")  # nothing declared: the default
    e.set_device("C", units={"temperature": ""})  # declared as having no unit
    for device in "ABC":
        e.on_data(device, {"temperature": 31.5}, T0)
    contexts = {f.device_id: f.context for f in e.take()}
    assert contexts["A"]["unit"] == "°F"
    assert contexts["B"]["unit"] == "°C"
    assert "unit" not in contexts["C"]
    message = "{rule}: {device} {reading}"
    assert render(message, {**contexts["B"], **reading(contexts["B"])}) == (
        "{rule}: {device} temperature 31.5 °C > 30 °C"
    )
    assert render("{value}/{threshold}", {**contexts["C"], **reading(contexts["C"])}) == "31.5/30"
    # A message written before units existed keeps its own unit, not a second one.
    b = {**contexts["B"], **reading(contexts["B"])}
    assert render("{value}°C over {threshold} ({unit})", b) == "31.5°C over 30 (°C)"
    # An info message without units keeps the declared ones.
    e.set_device("A", name="renamed")
    assert e.devices["A"].units["temperature"] == "°F"


def test_reading_without_a_metric_leaves_the_placeholders() -> None:
    assert reading({"status": "offline"}) == {}
    below = {"metric": "humidity", "value": 20.0, "threshold": 25, "op": "<", "unit": "%"}
    assert reading(below)["reading"] == "humidity 20 % < 25 %"

"""Schedules: time of day in a time zone, weekdays, cron, midnight and DST."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from iotp.automation.engine import FIRE, Engine
from iotp.automation.schedule import CronError, in_window, parse_cron
from iotp.automation.spec import Rule


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def schedule_rule(**trigger: Any) -> Rule:
    return Rule.model_validate(
        {
            "id": 1,
            "name": "s",
            "trigger": {"type": "schedule", **trigger},
            "actions": [{"type": "notify"}],
            "cooldown_seconds": 0,
        }
    )


def fire_times(r: Rule, start: str, end: str, step: float = 60) -> list[str]:
    e = Engine()
    e.load([r])
    now = ts(start)
    e.tick(now)
    while now < ts(end):
        now += step
        e.tick(now)
    out = []
    for f in e.take():
        assert f.kind == FIRE
        out.append(datetime.fromtimestamp(f.ts, UTC).strftime("%Y-%m-%d %H:%M"))
    return out


def test_time_of_day_in_a_time_zone() -> None:
    # 18:00 in Berlin is 17:00 UTC in winter.
    r = schedule_rule(at="18:00", timezone="Europe/Berlin")
    assert fire_times(r, "2025-11-27 00:00", "2025-11-29 00:00") == [
        "2025-11-27 17:00",
        "2025-11-28 17:00",
    ]


def test_fires_once_even_with_coarse_ticks() -> None:
    r = schedule_rule(at="00:00", timezone="UTC")
    # Ticks every 7 minutes straddle midnight: the missed minute is caught up once.
    assert fire_times(r, "2025-11-27 23:50", "2025-11-28 00:20", step=420) == ["2025-11-28 00:00"]


def test_weekdays() -> None:
    # 2025-11-29 is a Saturday (5), 2025-11-30 Sunday (6), 2025-12-01 Monday (0).
    r = schedule_rule(at="07:30", weekdays=[0, 1, 2, 3, 4])
    assert fire_times(r, "2025-11-28 12:00", "2025-12-02 12:00") == [
        "2025-12-01 07:30",
        "2025-12-02 07:30",
    ]


def test_midnight_in_a_time_zone_is_another_utc_day() -> None:
    # 00:15 in Tokyo (UTC+9) is 15:15 UTC of the previous day; weekday is Tokyo's.
    r = schedule_rule(at="00:15", weekdays=[0], timezone="Asia/Tokyo")  # Mondays in Tokyo
    assert fire_times(r, "2025-11-29 00:00", "2025-12-02 00:00") == ["2025-11-30 15:15"]


def test_dst_spring_forward_skips_a_missing_local_time() -> None:
    # Europe/Berlin: 2026-03-29 02:00 -> 03:00; 02:30 does not exist that day.
    r = schedule_rule(at="02:30", timezone="Europe/Berlin")
    assert fire_times(r, "2026-03-28 00:00", "2026-03-31 00:00") == [
        "2026-03-28 01:30",
        "2026-03-30 00:30",
    ]


def test_cron() -> None:
    r = schedule_rule(cron="*/15 9-10 * * mon-fri", timezone="UTC")
    got = fire_times(r, "2025-11-28 08:59", "2025-11-28 11:00")  # a Friday
    assert got == [f"2025-11-28 {h:02d}:{m:02d}" for h in (9, 10) for m in (0, 15, 30, 45)]
    assert fire_times(r, "2025-11-29 08:00", "2025-11-29 12:00") == []  # Saturday


def test_cron_parsing() -> None:
    c = parse_cron("0 12 1 * 0")  # day 1 OR Sunday (both restricted: either matches)
    assert c.matches(datetime(2025, 11, 30, 12, 0))  # a Sunday
    assert c.matches(datetime(2025, 12, 1, 12, 0))  # the 1st (a Monday)
    assert not c.matches(datetime(2025, 12, 2, 12, 0))
    assert parse_cron("0 0 * * 7").weekdays == frozenset({0})
    for bad in ("* * * *", "60 * * * *", "*/0 * * * *", "5-1 * * * *", "a * * * *"):
        with pytest.raises(CronError):
            parse_cron(bad)


def test_time_window_across_midnight() -> None:
    def inside(t: str, **kw: Any) -> bool:
        return in_window(
            ts(t),
            after="22:00",
            before="06:00",
            weekdays=kw.get("weekdays", []),
            tz=kw.get("tz", "UTC"),
        )

    assert inside("2025-11-27 23:00")
    assert inside("2025-11-28 05:59")
    assert not inside("2025-11-28 06:00")
    assert not inside("2025-11-28 21:59")
    # Friday-night window (starts Friday = 4): Saturday 02:00 belongs to it.
    assert inside("2025-11-29 02:00", weekdays=[4])
    assert not inside("2025-11-28 02:00", weekdays=[4])  # Friday 02:00 is Thursday's window
    # In Los Angeles (UTC-8), 23:00 local is 07:00 UTC.
    assert inside("2025-11-28 07:00", tz="America/Los_Angeles")
    assert not inside("2025-11-28 15:00", tz="America/Los_Angeles")

"""Local time of day, weekdays and 5-field cron, evaluated minute by minute.

A schedule is checked for each UTC minute that passed since the last check, converted
to the rule's time zone, so daylight-saving changes behave like a wall clock: a local
time that does not exist that day does not fire, one that happens twice fires twice.
Cron is the classic ``minute hour day-of-month month day-of-week`` (``*``, ``a-b``,
``a,b``, ``*/n``, ``a-b/n``; day of week 0-7 with 0 and 7 = Sunday; when both day
fields are restricted, either matching is enough, as in Vixie cron). A matcher is ~40
lines, so the platform does not take a dependency for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from iotp.errors import IotpError

MAX_CATCH_UP_MINUTES = 24 * 60


class CronError(IotpError):
    pass


_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 7))
_NAMES = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
    "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # cron numbering: 0 = Sunday
    day_any: bool
    weekday_any: bool

    def matches(self, local: datetime) -> bool:
        if (
            local.minute not in self.minutes
            or local.hour not in self.hours
            or local.month not in self.months
        ):
            return False
        day_ok = local.day in self.days
        weekday_ok = (local.isoweekday() % 7) in self.weekdays
        if self.day_any or self.weekday_any:
            return day_ok and weekday_ok
        return day_ok or weekday_ok


def _number(text: str, lo: int, hi: int, what: str) -> int:
    value = _NAMES.get(text.lower()) if not text.isdigit() else int(text)
    if value is None or not lo <= value <= hi:
        raise CronError(f"cron {what}: {text!r} is not in {lo}..{hi}")
    return value


def _field(text: str, what: str, lo: int, hi: int) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"cron {what}: empty list item")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"cron {what}: bad step {step_text!r}")
            step = int(step_text)
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _number(a, lo, hi, what), _number(b, lo, hi, what)
            if start > end:
                raise CronError(f"cron {what}: range {base!r} runs backwards")
        else:
            start = _number(base, lo, hi, what)
            end = hi if step_text else start
        out.update(range(start, end + 1, step))
    return out


@lru_cache(maxsize=256)
def parse_cron(expression: str) -> Cron:
    parts = expression.split()
    if len(parts) != 5:
        raise CronError(
            f"cron needs 5 fields (minute hour day month weekday), got {len(parts)}: {expression!r}"
        )
    sets = [_field(text, name, lo, hi) for text, (name, lo, hi) in zip(parts, _FIELDS, strict=True)]
    weekdays = {d % 7 for d in sets[4]}
    return Cron(
        frozenset(sets[0]),
        frozenset(sets[1]),
        frozenset(sets[2]),
        frozenset(sets[3]),
        frozenset(weekdays),
        day_any=parts[2] == "*",
        weekday_any=parts[4] == "*",
    )


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def hhmm_minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def local_time(ts: float, tz: str) -> datetime:
    return datetime.fromtimestamp(ts, UTC).astimezone(zone(tz))


def in_window(
    ts: float, *, after: str | None, before: str | None, weekdays: list[int], tz: str
) -> bool:
    """Local time in [after, before); across midnight when after > before. ``weekdays``
    (0 = Monday) applies to the day the window starts."""
    local = local_time(ts, tz)
    minute = local.hour * 60 + local.minute
    start = hhmm_minutes(after) if after else 0
    end = hhmm_minutes(before) if before else 24 * 60
    weekday = local.weekday()
    if start <= end:
        inside = start <= minute < end
    elif minute >= start:
        inside = True  # evening part: the window started today
    elif minute < end:
        inside = True  # morning part: the window started yesterday
        weekday = (weekday - 1) % 7
    else:
        inside = False
    return inside and (not weekdays or weekday in weekdays)


def schedule_matches(
    local: datetime, *, at: str | None, cron: str | None, weekdays: list[int]
) -> bool:
    if cron is not None:
        return parse_cron(cron).matches(local)
    if at is None or local.hour * 60 + local.minute != hhmm_minutes(at):
        return False
    return not weekdays or local.weekday() in weekdays


def due_minutes(last_minute: int, now: float) -> range:
    """UTC minute numbers (epoch // 60) after ``last_minute`` up to the current one."""
    current = int(now // 60)
    first = max(last_minute + 1, current - MAX_CATCH_UP_MINUTES + 1)
    return range(first, current + 1)

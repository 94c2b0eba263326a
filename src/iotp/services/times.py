"""The one time format the platform shows: ISO 8601 in UTC (``...Z``), as in every REST
response and every event payload that describes a resource. The database and the event
envelope keep epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any


def iso_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _iso(ts)


# The same few instants are formatted again and again: a bulk command's thousand rows
# share their creation time, and a command is shown at each step of its life.
@lru_cache(maxsize=4096)
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def epoch(value: str | float) -> float:
    """Back to epoch seconds, from what ``iso_time`` wrote (or a number)."""
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(value).timestamp()


def with_iso_ts(entries: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """History entries ({..., "ts": epoch}) as shown: the same entries, ``ts`` in ISO."""
    return [{**e, "ts": iso_time(e["ts"])} if "ts" in e else dict(e) for e in entries or []]

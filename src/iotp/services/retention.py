"""Long history kept cheap: partitions, retention and rollups .

PostgreSQL
    ``telemetry`` is partitioned by day on ``ts`` (migration 0005). The leader worker
    creates partitions ``partitions_ahead_days`` ahead, rolls raw rows up per minute and
    per hour (min/max/sum/count per device and metric, so averages compose), and drops
    whole raw partitions older than ``retention_days`` once they are rolled up: no
    DELETE, no vacuum debt. Rollups are kept longer (``rollup_*_retention_days``) and
    answer long-range history queries (``services.telemetry.query_buckets``).
SQLite
    One table; a simple retention job deletes raw rows older than ``retention_days``,
    at most once an hour. No rollups: the single-user database answers from raw rows.

Progress lives in ``storage_state`` (name -> value): the rollup watermarks (every
bucket before them is rolled up) and the last retention run.
"""

from __future__ import annotations

import calendar
import logging
import math
import time
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from iotp.settings import Settings

log = logging.getLogger(__name__)

DAY = 86400
MINUTE = 60
HOUR = 3600
# Samples may arrive a little late (device clocks, QoS 1 redelivery): minutes are rolled
# up only this long after they end, and the last few are recomputed every round.
LATE_SECONDS = 120
REROLL_MINUTES_SECONDS = 300
# Bound one round's work; a backlog is caught up over several rounds.
ROLLUP_CHUNK_SECONDS = 6 * HOUR
SQLITE_RETENTION_EVERY_SECONDS = HOUR

WATERMARK_1M = "rollup_1m"
WATERMARK_1H = "rollup_1h"
LAST_SQLITE_RETENTION = "sqlite_retention"
ROLLUP_TABLES = {MINUTE: "telemetry_rollup_1m", HOUR: "telemetry_rollup_1h"}


@dataclass
class MaintenanceReport:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    rolled_up_to: float | None = None
    deleted_rows: int = 0


SCHEMA = "telemetry_partitions"
DEFAULT_PARTITION = f"{SCHEMA}.pdefault"


def partition_name(day_start: int) -> str:
    return f"{SCHEMA}.p" + time.strftime("%Y%m%d", time.gmtime(day_start))


# ---- storage_state ----------------------------------------------------------------


async def get_state(conn: AsyncConnection, name: str) -> float | None:
    value = await conn.scalar(text("SELECT value FROM storage_state WHERE name = :n"), {"n": name})
    return None if value is None else float(value)


async def set_state(conn: AsyncConnection, name: str, value: float) -> None:
    await conn.execute(
        text(
            "INSERT INTO storage_state (name, value) VALUES (:n, :v) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
        ),
        {"n": name, "v": value},
    )


# ---- partitions (PostgreSQL) --------------------------------------------------------


async def is_partitioned(conn: AsyncConnection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    kind = await conn.scalar(
        text("SELECT relkind FROM pg_class WHERE relname = 'telemetry' AND relkind = 'p'")
    )
    return kind is not None


async def partitions(conn: AsyncConnection) -> dict[str, tuple[float, float]]:
    """Daily partitions of telemetry: name -> (from, to)."""
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE p.relname = 'telemetry' AND n.nspname = :s"
        ),
        {"s": SCHEMA},
    )
    out: dict[str, tuple[float, float]] = {}
    for (name,) in rows:
        if name == "pdefault":
            continue
        start = float(calendar.timegm(time.strptime(name[1:], "%Y%m%d")))
        out[f"{SCHEMA}.{name}"] = (start, start + DAY)
    return out


async def ensure_partitions(conn: AsyncConnection, now: float, ahead_days: int) -> list[str]:
    """Create the daily partitions from today to ``ahead_days`` ahead. Rows that landed
    in the default partition for a new day's range are moved into it."""
    existing = await partitions(conn)
    today = int(now // DAY) * DAY
    created: list[str] = []
    for day in range(today, today + (ahead_days + 1) * DAY, DAY):
        name = partition_name(day)
        if name in existing:
            continue
        await conn.execute(
            text(
                "CREATE TEMP TABLE iotp_moving ON COMMIT DROP AS WITH moved AS ("  # noqa: S608
                f"DELETE FROM {DEFAULT_PARTITION} WHERE ts >= :a AND ts < :b RETURNING *) "
                "SELECT * FROM moved"
            ),
            {"a": day, "b": day + DAY},
        )
        await conn.execute(
            text(
                f"CREATE TABLE {name} PARTITION OF telemetry FOR VALUES FROM ({day}) "
                f"TO ({day + DAY})"
            )
        )
        await conn.execute(text("INSERT INTO telemetry SELECT * FROM iotp_moving"))
        await conn.execute(text("DROP TABLE iotp_moving"))
        created.append(name)
    return created


async def drop_old_partitions(
    conn: AsyncConnection, cutoff: float, rolled_up_to: float | None
) -> list[str]:
    """Drop raw partitions that end before ``cutoff`` and are fully rolled up."""
    dropped: list[str] = []
    for name, (_start, end) in sorted((await partitions(conn)).items()):
        if end <= cutoff and rolled_up_to is not None and end <= rolled_up_to:
            await conn.execute(text(f"DROP TABLE {name}"))
            dropped.append(name)
    # Stray old rows in the default partition (clocks far off) go the same way.
    if rolled_up_to is not None:
        await conn.execute(
            text(f"DELETE FROM {DEFAULT_PARTITION} WHERE ts < :c"),  # noqa: S608 - constant
            {"c": min(cutoff, rolled_up_to)},
        )
    return dropped


# ---- rollups (PostgreSQL) -----------------------------------------------------------

# Per device through the primary key (device_id, ts, seq): an index range per device
# instead of a scan of the whole day's partition.
_ROLLUP_MINUTES = """
INSERT INTO telemetry_rollup_1m (device_id, metric, bucket, vmin, vmax, vsum, vcount)
SELECT t.device_id, m.key, floor(t.ts / 60) * 60, min(m.value::float8), max(m.value::float8),
       sum(m.value::float8), count(*)
FROM devices d
CROSS JOIN LATERAL (SELECT device_id, ts, metrics FROM telemetry
                    WHERE device_id = d.id AND ts >= :a AND ts < :b) AS t
CROSS JOIN LATERAL jsonb_each_text(t.metrics) AS m(key, value)
GROUP BY 1, 2, 3
ON CONFLICT (device_id, metric, bucket) DO UPDATE SET vmin = excluded.vmin,
    vmax = excluded.vmax, vsum = excluded.vsum, vcount = excluded.vcount
"""

_OLDEST = """
SELECT min(f.ts) FROM devices d
CROSS JOIN LATERAL (SELECT ts FROM telemetry WHERE device_id = d.id ORDER BY ts LIMIT 1) AS f
"""

_ROLLUP_HOURS = """
INSERT INTO telemetry_rollup_1h (device_id, metric, bucket, vmin, vmax, vsum, vcount)
SELECT device_id, metric, floor(bucket / 3600) * 3600, min(vmin), max(vmax), sum(vsum),
       sum(vcount)
FROM telemetry_rollup_1m WHERE bucket >= :a AND bucket < :b
GROUP BY 1, 2, 3
ON CONFLICT (device_id, metric, bucket) DO UPDATE SET vmin = excluded.vmin,
    vmax = excluded.vmax, vsum = excluded.vsum, vcount = excluded.vcount
"""


async def rollup(conn: AsyncConnection, now: float) -> float | None:
    """Roll raw rows up per minute, then minutes up per hour. Returns the minute
    watermark: every minute before it is rolled up."""
    upto = math.floor((now - LATE_SECONDS) / MINUTE) * MINUTE
    mark = await get_state(conn, WATERMARK_1M)
    if mark is None:
        oldest = await conn.scalar(text(_OLDEST))
        if oldest is None:
            return None  # nothing stored yet: start with the first data
        start = float(math.floor(float(oldest) / MINUTE) * MINUTE)
    else:
        start = max(mark - REROLL_MINUTES_SECONDS, 0.0)
    end = min(upto, start + ROLLUP_CHUNK_SECONDS)
    if end > start:
        await conn.execute(text(_ROLLUP_MINUTES), {"a": start, "b": end})
        mark = max(mark or 0.0, float(end))
        await set_state(conn, WATERMARK_1M, mark)
    if mark is None:
        return None
    hour_mark = await get_state(conn, WATERMARK_1H)
    hour_upto = math.floor(mark / HOUR) * HOUR
    hour_start = math.floor(start / HOUR) * HOUR if hour_mark is None else hour_mark - HOUR
    if hour_upto > hour_start:
        await conn.execute(text(_ROLLUP_HOURS), {"a": hour_start, "b": hour_upto})
        await set_state(conn, WATERMARK_1H, max(hour_mark or 0.0, float(hour_upto)))
    return mark


async def expire_rollups(conn: AsyncConnection, settings: Settings, now: float) -> None:
    for table, days in (
        (ROLLUP_TABLES[MINUTE], settings.rollup_minute_retention_days),
        (ROLLUP_TABLES[HOUR], settings.rollup_hour_retention_days),
    ):
        if days > 0:
            await conn.execute(
                text(f"DELETE FROM {table} WHERE bucket < :c"),  # noqa: S608 - our own table names
                {"c": now - days * DAY},
            )


# ---- one maintenance round ----------------------------------------------------------


async def maintain(engine: AsyncEngine, settings: Settings, now: float) -> MaintenanceReport:
    """Run by the leader worker every ``maintenance_interval_seconds``."""
    report = MaintenanceReport()
    async with engine.begin() as conn:
        partitioned = await is_partitioned(conn)
        if partitioned:
            report.created = await ensure_partitions(conn, now, settings.partitions_ahead_days)
    if not partitioned:
        if engine.dialect.name == "sqlite" and settings.retention_days > 0:
            report.deleted_rows = await sqlite_retention(engine, settings, now)
        return report
    async with engine.begin() as conn:
        report.rolled_up_to = await rollup(conn, now)
    async with engine.begin() as conn:
        if settings.retention_days > 0:
            cutoff = now - settings.retention_days * DAY
            report.dropped = await drop_old_partitions(conn, cutoff, report.rolled_up_to)
        await expire_rollups(conn, settings, now)
    if report.created or report.dropped:
        log.info("partitions created %s, dropped %s", report.created, report.dropped)
    return report


async def sqlite_retention(engine: AsyncEngine, settings: Settings, now: float) -> int:
    async with engine.begin() as conn:
        last = await get_state(conn, LAST_SQLITE_RETENTION)
        if last is not None and now - last < SQLITE_RETENTION_EVERY_SECONDS:
            return 0
        result = await conn.execute(
            text("DELETE FROM telemetry WHERE ts < :c"),
            {"c": now - settings.retention_days * DAY},
        )
        await set_state(conn, LAST_SQLITE_RETENTION, now)
        return int(getattr(result, "rowcount", 0) or 0)


# ---- history queries over rollups ---------------------------------------------------

"""Telemetry storage: the batched, idempotent write path and the history queries (raw
rows, or the rollups ``services.retention`` keeps, where they cover a long range)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from iotp.services import retention

# (device_id, ts, seq, metrics_json, attributes_json | None)
Row = tuple[str, float, int, str, str | None]

_PG_INSERT = (
    "INSERT INTO telemetry (device_id, ts, seq, metrics, attributes) "
    "SELECT d, t, s, m::jsonb, a::jsonb FROM unnest($1::text[], $2::float8[], $3::int8[], "
    "$4::text[], $5::text[]) AS u(d, t, s, m, a) ON CONFLICT DO NOTHING"
)
_SQLITE_INSERT = (
    "INSERT OR IGNORE INTO telemetry (device_id, ts, seq, metrics, attributes) "
    "VALUES (?, ?, ?, ?, ?)"
)
# The batch's counts, in the batch's transaction (ingest_counts).
_PG_COUNT = (
    "INSERT INTO ingest_counts (component_id, stored, duplicates) VALUES ($1, $2, $3) "
    "ON CONFLICT (component_id) DO UPDATE SET stored = ingest_counts.stored + excluded.stored, "
    "duplicates = ingest_counts.duplicates + excluded.duplicates"
)
_SQLITE_COUNT = _PG_COUNT.replace("$1, $2, $3", "?, ?, ?")
_METRIC_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def make_row(
    device_id: str, ts: float, seq: int, metrics: dict[str, float], attributes: Any
) -> Row:
    attrs = orjson.dumps(attributes).decode() if attributes else None
    return (device_id, ts, seq, orjson.dumps(metrics).decode(), attrs)


async def insert_rows(
    engine: AsyncEngine, rows: Sequence[Row], *, counted_as: str | None = None
) -> int:
    """Insert a batch in one transaction; returns how many rows were new (the rest
    were redeliveries already stored). With ``counted_as`` (a component id) the same
    transaction adds the new and the duplicate rows to that component's ingest_counts."""
    if not rows:
        return 0
    async with engine.begin() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        if engine.dialect.name == "postgresql":
            cols = list(zip(*rows, strict=True))
            # SQLAlchemy opens its asyncpg transaction lazily, on its own first statement:
            # the driver's statements need their own to commit together.
            async with driver.transaction():
                status: str = await driver.execute(_PG_INSERT, *cols)
                inserted = int(status.rsplit(" ", 1)[1])
                if counted_as is not None:
                    await driver.execute(_PG_COUNT, counted_as, inserted, len(rows) - inserted)
            return inserted
        before: int = driver.total_changes
        await driver.executemany(_SQLITE_INSERT, rows)
        inserted = int(driver.total_changes) - before
        if counted_as is not None:
            await driver.execute(_SQLITE_COUNT, (counted_as, inserted, len(rows) - inserted))
        return inserted


def _metric_expr(dialect: str, metric: str) -> str:
    # Names are validated against the protocol's pattern before they reach SQL.
    if _METRIC_RE.fullmatch(metric) is None:
        raise ValueError(f"bad metric name {metric!r}")
    if dialect == "postgresql":
        return f"(metrics->>'{metric}')::float8"
    return f"json_extract(metrics, '$.\"{metric}\"')"


async def query_series(
    conn: AsyncConnection,
    *,
    device_id: str,
    metric: str,
    since: float,
    until: float,
    bucket: float | None,
    limit: int = 100_000,
    raw_only: bool = False,
) -> list[dict[str, float | int]]:
    """One metric's history: ``{ts, value}`` samples, or with ``bucket`` (seconds) one
    ``{ts, avg, min, max, count}`` per bucket, read from the rollups where they cover
    the range (``raw_only``: never; the rollup path's own edges)."""
    if bucket is not None and not raw_only:  # long ranges read the rollups
        rolled = await query_with_rollups(
            conn,
            device_id=device_id,
            metric=metric,
            since=since,
            until=until,
            bucket=bucket,
            limit=limit,
        )
        if rolled is not None:
            return rolled
    dialect = conn.dialect.name
    expr = _metric_expr(dialect, metric)
    params: dict[str, Any] = {"d": device_id, "s": since, "u": until, "lim": limit}
    if bucket is None:
        sql = (
            f"SELECT ts, {expr} AS v FROM telemetry WHERE device_id = :d AND ts >= :s "
            f"AND ts < :u AND {expr} IS NOT NULL ORDER BY ts LIMIT :lim"
        )
        result = await conn.execute(text(sql), params)
        return [{"ts": r[0], "value": r[1]} for r in result]
    params["b"] = bucket
    if dialect == "postgresql":
        bucket_expr = "floor(ts / :b) * :b"
    else:
        # SQLite has no floor() before 3.35 builds with math functions; ts is positive.
        bucket_expr = "CAST(ts / :b AS INTEGER) * :b"
    sql = (
        f"SELECT {bucket_expr} AS bts, avg({expr}), min({expr}), max({expr}), count({expr}) "
        f"FROM telemetry WHERE device_id = :d AND ts >= :s AND ts < :u AND {expr} IS NOT NULL "
        f"GROUP BY bts ORDER BY bts LIMIT :lim"
    )
    result = await conn.execute(text(sql), params)
    return [
        {"ts": float(r[0]), "avg": r[1], "min": r[2], "max": r[3], "count": int(r[4])}
        for r in result
    ]


async def latest_values(
    conn: AsyncConnection, *, device_id: str, scan: int = 200
) -> dict[str, dict[str, float]]:
    """Latest value of each metric: walks the device's newest rows (index-only range)."""
    result = await conn.execute(
        text("SELECT ts, metrics FROM telemetry WHERE device_id = :d ORDER BY ts DESC LIMIT :n"),
        {"d": device_id, "n": scan},
    )
    latest: dict[str, dict[str, float]] = {}
    for ts, metrics in result:
        values = orjson.loads(metrics) if isinstance(metrics, str | bytes) else metrics
        for name, value in values.items():
            if name not in latest:
                latest[name] = {"value": value, "ts": ts}
    return latest


# What the fleet's latest values are read from: each device's newest rows (a device's
# messages may carry different metrics, e.g. a sensor report and a state report), no
# older than this before the device was last seen, so PostgreSQL reads only the newest
# partitions.
FLEET_LATEST_ROWS = 5
FLEET_LATEST_WINDOW_SECONDS = 86400.0


async def latest_of_fleet(
    conn: AsyncConnection, *, device_ids: Sequence[str] | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """The latest value of each metric of every device (or of ``device_ids``), from
    each device's newest rows: one query on PostgreSQL (an index range per device,
    partitions pruned by the device's last sighting), one per device on SQLite."""
    ids_filter = "" if device_ids is None else "AND d.id = ANY(:ids)"
    params: dict[str, Any] = {"n": FLEET_LATEST_ROWS, "w": FLEET_LATEST_WINDOW_SECONDS}
    if device_ids is not None:
        params["ids"] = list(device_ids)
    if conn.dialect.name == "postgresql":
        result = await conn.execute(
            text(
                "SELECT d.id, t.ts, t.metrics FROM devices d CROSS JOIN LATERAL ("
                " SELECT ts, metrics FROM telemetry"
                " WHERE telemetry.device_id = d.id AND telemetry.ts >= d.last_seen - :w"
                " ORDER BY ts DESC LIMIT :n) t"
                f" WHERE d.last_seen IS NOT NULL {ids_filter}"
            ),
            params,
        )
        rows: list[tuple[str, float, Any]] = [(r[0], r[1], r[2]) for r in result]
    else:
        seen = await conn.execute(
            text("SELECT id FROM devices WHERE last_seen IS NOT NULL ORDER BY id")
        )
        wanted = None if device_ids is None else set(device_ids)
        rows = []
        for (device_id,) in seen.all():
            if wanted is not None and device_id not in wanted:
                continue
            newest = await conn.execute(
                text(
                    "SELECT ts, metrics FROM telemetry WHERE device_id = :d"
                    " ORDER BY ts DESC LIMIT :n"
                ),
                {"d": device_id, "n": FLEET_LATEST_ROWS},
            )
            rows.extend((device_id, ts, metrics) for ts, metrics in newest)
    fleet: dict[str, dict[str, dict[str, float]]] = {}
    for device_id, ts, metrics in sorted(rows, key=lambda r: (r[0], -r[1])):
        latest = fleet.setdefault(device_id, {})
        values = orjson.loads(metrics) if isinstance(metrics, str | bytes) else metrics
        for name, value in values.items():
            if name not in latest:
                latest[name] = {"value": value, "ts": ts}
    return fleet


async def metric_names(conn: AsyncConnection, *, device_id: str, scan: int = 200) -> list[str]:
    return sorted(await latest_values(conn, device_id=device_id, scan=scan))


def auto_bucket(since: float, until: float, max_points: int = 1000) -> float | None:
    """Raw points for short ranges; otherwise a round bucket giving <= max_points."""
    span = max(until - since, 1.0)
    if span <= 3600:
        return None
    for step in (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
        if span / step <= max_points:
            return float(step)
    return float(math.ceil(span / max_points))


async def delete_device_telemetry(conn: AsyncConnection, device_id: str) -> None:
    await conn.execute(text("DELETE FROM telemetry WHERE device_id = :d"), {"d": device_id})


async def query_with_rollups(
    conn: AsyncConnection,
    *,
    device_id: str,
    metric: str,
    since: float,
    until: float,
    bucket: float,
    limit: int,
) -> list[dict[str, float | int]] | None:
    """Bucketed history from the rollups where they cover the range, raw rows for the
    edges (the partial first rollup bucket, and everything after the watermark). None
    when rollups cannot help (SQLite, buckets under a minute or not whole minutes, no
    rollups yet): the caller then aggregates raw rows."""
    minute, hour = retention.MINUTE, retention.HOUR
    if conn.dialect.name != "postgresql" or bucket < minute or bucket % minute:
        return None
    step = hour if bucket % hour == 0 else minute
    mark = await retention.get_state(
        conn, retention.WATERMARK_1H if step == hour else retention.WATERMARK_1M
    )
    if mark is None:
        return None
    start = math.ceil(since / step) * step
    edge = min(mark, until)
    if edge <= start:
        return None
    table = retention.ROLLUP_TABLES[step]  # one of two fixed names
    rows = await conn.execute(
        text(
            f"SELECT floor(bucket / :b) * :b AS bts, sum(vsum), min(vmin), max(vmax), "
            f"sum(vcount) FROM {table} WHERE device_id = :d AND metric = :m "
            "AND bucket >= :s AND bucket < :e GROUP BY bts ORDER BY bts"
        ),
        {"b": bucket, "d": device_id, "m": metric, "s": start, "e": edge},
    )
    merged: dict[float, list[float]] = {}  # bts -> [sum, min, max, count]
    for bts, vsum, vmin, vmax, count in rows:
        merged[float(bts)] = [float(vsum), float(vmin), float(vmax), float(count)]
    for lo, hi in ((since, start), (edge, until)):
        if hi <= lo:
            continue
        raw = await query_series(
            conn,
            device_id=device_id,
            metric=metric,
            since=lo,
            until=hi,
            bucket=bucket,
            limit=limit,
            raw_only=True,
        )
        for r in raw:
            _merge(merged, float(r["ts"]), r)
    out: list[dict[str, float | int]] = []
    for bts in sorted(merged)[:limit]:
        vsum, vmin, vmax, count = merged[bts]
        out.append({"ts": bts, "avg": vsum / count, "min": vmin, "max": vmax, "count": int(count)})
    return out


def _merge(merged: dict[float, list[float]], bts: float, r: dict[str, Any]) -> None:
    count = float(r["count"])
    vsum = float(r["avg"]) * count
    have = merged.get(bts)
    if have is None:
        merged[bts] = [vsum, float(r["min"]), float(r["max"]), count]
    else:
        have[0] += vsum
        have[1] = min(have[1], float(r["min"]))
        have[2] = max(have[2], float(r["max"]))
        have[3] += count

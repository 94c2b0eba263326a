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
) -> list[dict[str, float | int]]:
    """One metric's history: ``{ts, value}`` samples, or with ``bucket`` (seconds) one
    ``{ts, avg, min, max, count}`` per bucket (``query_buckets``)."""
    if bucket is not None:
        series = await query_buckets(
            conn,
            device_id=device_id,
            metrics=[metric],
            since=since,
            until=until,
            bucket=bucket,
            limit=limit,
        )
        return series[metric]
    expr = _metric_expr(conn.dialect.name, metric)
    sql = (
        f"SELECT ts, {expr} AS v FROM telemetry WHERE device_id = :d AND ts >= :s "
        f"AND ts < :u AND {expr} IS NOT NULL ORDER BY ts LIMIT :lim"
    )
    result = await conn.execute(text(sql), {"d": device_id, "s": since, "u": until, "lim": limit})
    return [{"ts": r[0], "value": r[1]} for r in result]


# bucket start -> [sum, min, max, count] of one metric
_Buckets = dict[float, list[float]]


async def query_buckets(
    conn: AsyncConnection,
    *,
    device_id: str,
    metrics: Sequence[str],
    since: float,
    until: float,
    bucket: float,
    limit: int = 100_000,
) -> dict[str, list[dict[str, float | int]]]:
    """Several metrics' history, one ``{ts, avg, min, max, count}`` per bucket with data
    (at most ``limit`` per metric): from the rollups where they cover the range, from
    raw rows for the edges (the partial first rollup bucket, and everything after the
    watermark) or the whole range where rollups cannot help (SQLite, buckets under a
    minute or not whole minutes, no rollups yet). One query per source for all the
    metrics: a chart of three metrics costs about what one metric did."""
    if not metrics:  # a device that has sent no metric yet
        return {}
    merged: dict[str, _Buckets] = {m: {} for m in metrics}
    raw_ranges = [(since, until)]
    covered = await _rollup_range(conn, since, until, bucket)
    if covered is not None:
        step, start, edge = covered
        await _read_rollups(conn, merged, device_id, step, start, edge, bucket)
        raw_ranges = [(since, start), (edge, until)]
    for lo, hi in raw_ranges:
        if hi > lo:
            await _read_raw_buckets(conn, merged, device_id, lo, hi, bucket, limit)
    out: dict[str, list[dict[str, float | int]]] = {}
    for metric, buckets in merged.items():
        rows: list[dict[str, float | int]] = []
        for bts in sorted(buckets)[:limit]:
            vsum, vmin, vmax, count = buckets[bts]
            rows.append(
                {"ts": bts, "avg": vsum / count, "min": vmin, "max": vmax, "count": int(count)}
            )
        out[metric] = rows
    return out


async def _rollup_range(
    conn: AsyncConnection, since: float, until: float, bucket: float
) -> tuple[int, float, float] | None:
    """(rollup step, first whole step in range, watermark or until) where a rollup
    table answers part of the range, else None."""
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
    return step, start, edge


async def _read_rollups(
    conn: AsyncConnection,
    merged: dict[str, _Buckets],
    device_id: str,
    step: int,
    start: float,
    edge: float,
    bucket: float,
) -> None:
    table = retention.ROLLUP_TABLES[step]  # one of two fixed names
    rows = await conn.execute(
        text(
            # sum(bigint) is numeric, decoded as Decimal: the float8 cast saves that per row
            f"SELECT metric, floor(bucket / :b) * :b AS bts, sum(vsum), min(vmin), max(vmax), "
            f"sum(vcount)::float8 FROM {table} WHERE device_id = :d AND metric = ANY(:m) "
            "AND bucket >= :s AND bucket < :e GROUP BY metric, bts"
        ),
        {"b": bucket, "d": device_id, "m": list(merged), "s": start, "e": edge},
    )
    for metric, bts, vsum, vmin, vmax, count in rows:
        merged[metric][float(bts)] = [float(vsum), float(vmin), float(vmax), float(count)]


async def _read_raw_buckets(
    conn: AsyncConnection,
    merged: dict[str, _Buckets],
    device_id: str,
    since: float,
    until: float,
    bucket: float,
    limit: int,
) -> None:
    """Aggregates raw rows of [since, until) into ``merged``, every metric from the same
    scan; ``limit``: the first buckets holding any of the metrics."""
    dialect = conn.dialect.name
    names = list(merged)
    values = ", ".join(f"{_metric_expr(dialect, m)} AS v{i}" for i, m in enumerate(names))
    # Sums, not averages: merged with rollups and edges as sums, and the average made
    # once (sum / count, as SQL's avg is), so a range read raw answers as it always did.
    # SQLite's total() is its float sum (sum() of integers can overflow).
    total = "sum" if dialect == "postgresql" else "total"
    aggregates = ", ".join(
        f"{total}(v{i}), min(v{i}), max(v{i}), count(v{i})" for i in range(len(names))
    )
    # Rows without any of the metrics (attributes only, other metrics) make no bucket:
    # the limit counts buckets that hold points.
    some = " OR ".join(f"v{i} IS NOT NULL" for i in range(len(names)))
    if dialect == "postgresql":
        bucket_expr = "floor(ts / :b) * :b"
    else:
        # SQLite has no floor() before 3.35 builds with math functions; ts is positive.
        bucket_expr = "CAST(ts / :b AS INTEGER) * :b"
    rows = await conn.execute(
        text(
            f"SELECT {bucket_expr} AS bts, {aggregates} FROM (SELECT ts, {values} FROM telemetry "
            f"WHERE device_id = :d AND ts >= :s AND ts < :u) AS r WHERE {some} "
            "GROUP BY bts ORDER BY bts LIMIT :lim"
        ),
        {"b": bucket, "d": device_id, "s": since, "u": until, "lim": limit},
    )
    for row in rows:
        bts = float(row[0])
        for i, name in enumerate(names):
            count = row[4 + 4 * i]
            if count:
                _merge(merged[name], bts, row[1 + 4 * i], row[2 + 4 * i], row[3 + 4 * i], count)


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
    """The metrics in the device's newest ``scan`` rows (the ones ``latest_values`` has)."""
    if conn.dialect.name == "postgresql":  # the names only: no row's JSON decoded here
        result = await conn.execute(
            text(
                "SELECT DISTINCT k FROM (SELECT metrics FROM telemetry WHERE device_id = :d "
                "ORDER BY ts DESC LIMIT :n) AS r, jsonb_object_keys(r.metrics) AS k"
            ),
            {"d": device_id, "n": scan},
        )
        return sorted(r[0] for r in result)  # code point order, as below
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


def _merge(buckets: _Buckets, bts: float, vsum: float, vmin: float, vmax: float, n: int) -> None:
    have = buckets.get(bts)
    if have is None:
        buckets[bts] = [float(vsum), float(vmin), float(vmax), float(n)]
    else:
        have[0] += float(vsum)
        have[1] = min(have[1], float(vmin))
        have[2] = max(have[2], float(vmax))
        have[3] += float(n)

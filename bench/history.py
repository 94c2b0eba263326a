"""A year of history: a fleet's telemetry stored as the retention policy keeps it, loaded
with COPY into the real PostgreSQL schema (`iotp db upgrade`, day partitions), then the
dashboard's queries timed over HTTP against the real API, bytes on disk per row, and the
worker's ingest rate on that database while the charts are read, against its rate on an
empty one.

    python bench/history.py                                  # 1,000 devices, a year
    python bench/history.py --devices 50 --days-hour 30      # a smoke run, under a minute

The data is what the retention policy keeps with these settings (the defaults):

    IOTP_RETENTION_DAYS=30                  raw rows, one per message (3 metrics each)
    IOTP_ROLLUP_MINUTE_RETENTION_DAYS=7     minute rollups, one row per device, metric, minute
    IOTP_ROLLUP_HOUR_RETENTION_DAYS=365     hour rollups, one row per device, metric, hour

Every device reports 3 metrics every `--interval` seconds (300). Values follow a daily and
a yearly cycle with noise; raw rows carry the device's own timestamp (a per-device phase,
in ms) and sequence number, as the worker stores them. Minute and hour rollups within the
raw window are computed from those raw rows exactly as the worker's rollups would be;
hour rollups older than the raw window come from the same model (mean, spread and count
of an hour's samples), since generating every sample of the year would cost the loader
~100 million evaluations for rows nobody keeps.

Rows are loaded oldest first, in the order the platform writes them (raw rows by time,
devices interleaved; rollups a bucket at a time for the whole fleet), so the tables'
pages hold what they hold in a running system: one device's year is spread over
thousands of pages, not packed together.

Loading runs without the benchmark lock; the measurements take it (`--lock`), so they
never overlap another benchmark. Everything is bounded (`--max-minutes`), runs on this
machine only, and the databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import math
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

from iotp.services import retention

ADMIN_PASSWORD = "bench-history-Pass-1"
DAY = 86400
HOUR = 3600
MINUTE = 60
METRICS = ("temperature", "humidity", "gas")
YEAR = 365.25 * DAY
TARGET_CHART_MS = 100.0
TARGET_LATEST_MS = 50.0
TARGET_INGEST_RATIO = 0.8


def loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def pct(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@contextmanager
def bench_lock(path: str) -> Iterator[None]:
    """Measurements hold the machine's benchmark lock, so no two benchmarks overlap."""
    started = time.monotonic()
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        waited = time.monotonic() - started
        if waited > 1:
            print(f"  (waited {waited:.0f} s for {path})", flush=True)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- the data --------------------------------------------------------------------------


@dataclass
class Plan:
    devices: int
    interval: int
    days_raw: int
    days_minute: int
    days_hour: int
    now: float
    raw_start: float = 0.0
    minute_start: float = 0.0
    hour_start: float = 0.0
    mark_1m: float = 0.0
    mark_1h: float = 0.0

    def __post_init__(self) -> None:
        # Retention drops whole day partitions: the raw window starts at a day boundary.
        self.raw_start = float(int((self.now - self.days_raw * DAY) // DAY) * DAY)
        self.minute_start = float(math.floor((self.now - self.days_minute * DAY) / MINUTE) * MINUTE)
        self.hour_start = float(math.floor((self.now - self.days_hour * DAY) / HOUR) * HOUR)
        # As the worker leaves them: minutes rolled up to LATE_SECONDS ago, hours to the
        # last whole hour before that; later rows are read raw.
        self.mark_1m = float(math.floor((self.now - retention.LATE_SECONDS) / MINUTE) * MINUTE)
        self.mark_1h = float(math.floor(self.mark_1m / HOUR) * HOUR)

    def expected(self) -> dict[str, int]:
        per_hour = HOUR // self.interval
        raw = int((self.now - self.raw_start) // self.interval) * self.devices
        minute = int((self.mark_1m - self.minute_start) // self.interval) * 3 * self.devices
        hour = int((self.mark_1h - self.hour_start) // HOUR) * 3 * self.devices
        return {"raw": raw, "minute": minute, "hour": hour, "per_hour": per_hour}


def device_id(i: int) -> str:
    return f"A4CF12{i:06X}"


class Model:
    """Deterministic per-device values: a daily cycle (warmest mid-afternoon UTC), a
    yearly one, an offset per device and noise from a fixed table (cheap in a loop)."""

    def __init__(self, devices: int, interval: int) -> None:
        rnd = random.Random(20261207)
        self.noise = [rnd.gauss(0.0, 1.0) for _ in range(8192)]
        self.offsets = [
            (rnd.uniform(-3, 3), rnd.uniform(-8, 8), rnd.uniform(-10, 10)) for _ in range(devices)
        ]
        self.phases = [round(rnd.uniform(0, interval), 3) for _ in range(devices)]
        slots = DAY // interval
        self.slots = slots
        self.cycle = [math.sin(2 * math.pi * (s / slots - 0.375)) for s in range(slots)]
        self.hour_cycle = [math.sin(2 * math.pi * ((hh + 0.5) / 24 - 0.375)) for hh in range(24)]
        self.ids = [device_id(d) for d in range(devices)]

    @staticmethod
    def season(ts: float) -> float:
        return math.sin(2 * math.pi * (ts / YEAR - 0.3))

    def means(self, d: int, cycle: float, season: float) -> tuple[float, float, float]:
        t_off, h_off, g_off = self.offsets[d]
        return (
            20.0 + t_off + 3.0 * cycle + 4.0 * season,
            55.0 + h_off - 10.0 * cycle - 5.0 * season,
            90.0 + g_off + 15.0 * max(cycle, 0.0),
        )


SIGMA = (0.3, 1.5, 4.0)


Rows = list[tuple[Any, ...]]


def window_rows(plan: Plan, model: Model, lo: float, hi: float) -> tuple[Rows, Rows, Rows]:
    """Raw rows, minute rollups and hour rollups of every device for [lo, hi) of the raw
    window, in the order the platform writes them: raw rows as they arrive (by time,
    devices interleaved), rollups a bucket at a time for all devices (the maintenance's
    rounds). So every table's heap is ordered by time as in a running system, and a
    device's history is spread over many pages."""
    interval = plan.interval
    noise = model.noise
    nn = len(noise)
    season = Model.season(lo)
    samples: list[tuple[float, int, int, float, float, float]] = []
    for d in range(plan.devices):
        phase = model.phases[d]
        for s in range(math.ceil((lo - phase) / interval), math.ceil((hi - phase) / interval)):
            ts = s * interval + phase
            means = model.means(d, model.cycle[int(ts % DAY) // interval], season)
            k = d * 7919 + s * 3
            samples.append(
                (
                    round(ts, 3),
                    d,
                    s,
                    round(means[0] + SIGMA[0] * noise[k % nn], 2),
                    round(min(100.0, max(0.0, means[1] + SIGMA[1] * noise[(k + 1) % nn])), 1),
                    float(round(means[2] + SIGMA[2] * noise[(k + 2) % nn])),
                )
            )
    samples.sort()
    ids = model.ids
    raw: Rows = []
    minute: Rows = []
    # (hour bucket, device) -> [min, max, sum, count] per metric
    hours: dict[tuple[float, int], list[list[float]]] = {}
    for ts, d, s, t, hu, g in samples:
        dev = ids[d]
        raw.append((dev, ts, s, f'{{"temperature":{t},"humidity":{hu},"gas":{int(g)}}}', None))
        values = (t, hu, g)
        if plan.minute_start <= ts < plan.mark_1m:
            bucket = float(math.floor(ts / MINUTE) * MINUTE)
            for m in range(3):
                v = values[m]
                minute.append((dev, METRICS[m], bucket, v, v, v, 1))
        if ts < plan.mark_1h:
            key = (float(math.floor(ts / HOUR) * HOUR), d)
            acc = hours.get(key)
            if acc is None:
                hours[key] = [[v, v, v, 1.0] for v in values]
            else:
                for m in range(3):
                    a, v = acc[m], values[m]
                    a[0] = min(a[0], v)
                    a[1] = max(a[1], v)
                    a[2] += v
                    a[3] += 1
    minute.sort(key=lambda r: r[2])  # a bucket at a time (stable: devices as they arrived)
    hour: Rows = []
    for (bucket, d), accs in sorted(hours.items()):
        for m in range(3):
            lo_, hi_, total, count = accs[m]
            hour.append((ids[d], METRICS[m], bucket, lo_, hi_, round(total, 6), int(count)))
    return raw, minute, hour


def model_hours(plan: Plan, model: Model, lo: float, hi: float) -> tuple[Rows, Rows, Rows]:
    """Hour rollups before the raw window, an hour at a time for all devices, from the
    model: an hour's mean, spread and count of samples."""
    noise = model.noise
    nn = len(noise)
    per_hour = HOUR // plan.interval
    hour: Rows = []
    hb = lo
    while hb < hi:
        c = model.hour_cycle[int(hb % DAY) // HOUR]
        season = Model.season(hb)
        n = int(hb // HOUR)
        for d in range(plan.devices):
            means = model.means(d, c, season)
            dev = model.ids[d]
            for m in range(3):
                sigma = SIGMA[m]
                j = d * 104729 + m * 31 + n * 3
                mean = means[m] + 0.3 * sigma * noise[j % nn]
                hour.append(
                    (
                        dev,
                        METRICS[m],
                        hb,
                        round(mean - sigma * (1.5 + abs(noise[(j + 1) % nn])), 2),
                        round(mean + sigma * (1.5 + abs(noise[(j + 2) % nn])), 2),
                        round(mean * per_hour, 2),
                        per_hour,
                    )
                )
        hb += HOUR
    return [], [], hour


RAW_COLUMNS = ("device_id", "ts", "seq", "metrics", "attributes")
ROLLUP_COLUMNS = ("device_id", "metric", "bucket", "vmin", "vmax", "vsum", "vcount")


async def create_partitions(conn: asyncpg.Connection, plan: Plan) -> int:
    existing = {
        r[0]
        for r in await conn.fetch(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1",
            retention.SCHEMA,
        )
    }
    made = 0
    day = int(plan.raw_start)
    while day < plan.now:
        name = retention.partition_name(day)
        if name.split(".", 1)[1] not in existing:
            await conn.execute(
                f"CREATE TABLE {name} PARTITION OF telemetry FOR VALUES FROM ({day}) TO ({day + DAY})"
            )
            made += 1
        day += DAY
    return made


async def insert_devices(conn: asyncpg.Connection, plan: Plan, model: Model) -> None:
    rows = [
        (
            device_id(d),
            f"sensor {d + 1}",
            "esp32",
            '["temperature", "humidity", "gas"]',
            "1.4.0",
            1,
            float(plan.interval),
            "online",
            plan.now - plan.days_hour * DAY,
            plan.now - plan.interval + model.phases[d],
            "",
            "[]",
            "{}",
            True,
        )
        for d in range(plan.devices)
    ]
    await conn.copy_records_to_table(
        "devices",
        records=rows,
        columns=(
            "id",
            "name",
            "type",
            "capabilities",
            "firmware_version",
            "protocol",
            "report_interval",
            "status",
            "first_seen",
            "last_seen",
            "notes",
            "tags",
            "metadata",
            "acks",
        ),
    )


async def load(dsn: str, plan: Plan, chunk_hours: int) -> dict[str, int]:
    """COPY everything in time order, a window at a time, the three tables over three
    connections at once (PostgreSQL works on one window while the next is generated)."""
    model = Model(plan.devices, plan.interval)
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    counts = {"raw": 0, "minute": 0, "hour": 0}
    try:
        await create_partitions(conns[0], plan)
        await insert_devices(conns[0], plan, model)
        # Oldest first, as the tables grew: the model's hours before the raw window, then
        # the raw window a day at a time with its rollups.
        windows: list[tuple[Any, float, float]] = []
        first_raw = min(plan.raw_start, plan.mark_1h)
        step = max(1, chunk_hours) * HOUR
        t = plan.hour_start
        while t < first_raw:
            windows.append((model_hours, t, min(t + step, first_raw)))
            t += step
        t = plan.raw_start
        while t < plan.now:
            windows.append((window_rows, t, min(t + DAY, plan.now)))
            t += DAY
        pending: list[asyncio.Task[str]] = []
        started = time.monotonic()
        for i, (make, lo, hi) in enumerate(windows):
            # Generated in a thread while the previous window's COPYs run on the loop.
            raw, minute, hour = await asyncio.get_running_loop().run_in_executor(
                None, make, plan, model, lo, hi
            )
            await asyncio.gather(*pending)
            counts["raw"] += len(raw)
            counts["minute"] += len(minute)
            counts["hour"] += len(hour)
            pending = [
                asyncio.create_task(conn.copy_records_to_table(table, records=rows, columns=cols))
                for conn, table, rows, cols in (
                    (conns[0], "telemetry", raw, RAW_COLUMNS),
                    (conns[1], "telemetry_rollup_1m", minute, ROLLUP_COLUMNS),
                    (conns[2], "telemetry_rollup_1h", hour, ROLLUP_COLUMNS),
                )
                if rows
            ]
            if i % 5 == 4 or i == len(windows) - 1:
                print(
                    f"  {i + 1:>3}/{len(windows)} windows (up to {time.strftime('%Y-%m-%d', time.gmtime(hi))}),"
                    f" {time.monotonic() - started:5.0f} s, load {loadavg()}",
                    flush=True,
                )
        await asyncio.gather(*pending)
        for name, value in (
            (retention.WATERMARK_1M, plan.mark_1m),
            (retention.WATERMARK_1H, plan.mark_1h),
        ):
            await conns[0].execute(
                "INSERT INTO storage_state (name, value) VALUES ($1, $2)", name, value
            )
    finally:
        for c in conns:
            await c.close()
    return counts


async def vacuum_analyze(dsn: str) -> None:
    """What autovacuum does to freshly loaded tables (statistics for the planner, the
    visibility map for index-only scans), done at once instead of whenever it gets to it."""
    conn = await asyncpg.connect(dsn)
    try:
        for table in ("devices", "telemetry", "telemetry_rollup_1m", "telemetry_rollup_1h"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
    finally:
        await conn.close()


async def sizes(dsn: str, counts: dict[str, int]) -> dict[str, tuple[int, int]]:
    """table -> (bytes on disk with indexes and TOAST, rows)."""
    conn = await asyncpg.connect(dsn)
    try:
        raw_bytes = await conn.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i "
            "WHERE i.inhparent = 'telemetry'::regclass"
        )
        raw_rows = await conn.fetchval("SELECT count(*) FROM telemetry")
        out = {"raw": (int(raw_bytes), int(raw_rows))}
        for key, table in (("minute", "telemetry_rollup_1m"), ("hour", "telemetry_rollup_1h")):
            size = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
            out[key] = (int(size), counts[key])
        out["database"] = (
            int(await conn.fetchval("SELECT pg_database_size(current_database())")),
            0,
        )
        return out
    finally:
        await conn.close()


# ---- the dashboard's queries over HTTP ------------------------------------------------

CHARTS = (("24 h", DAY), ("30 d", 30 * DAY), ("1 y", 365 * DAY))


def login(client: httpx.Client) -> None:
    r = client.post(
        "/api/auth/token",
        data={"username": "admin", "password": ADMIN_PASSWORD},
    )
    r.raise_for_status()
    client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"


def wait_health(api: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(api + "/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("API did not become healthy")


def chart(client: httpx.Client, dev: str, span: float, now: float) -> int:
    r = client.get(
        f"/api/devices/{dev}/telemetry",
        params={"since": str(now - span), "until": str(now), "bucket": "auto"},
    )
    r.raise_for_status()
    body = r.json()
    return sum(len(v) for v in body["series"].values())


@dataclass
class Timing:
    name: str
    ms: list[float] = field(default_factory=list)
    points: int = 0
    target: float | None = TARGET_CHART_MS

    def line(self) -> str:
        p50, p95 = pct(self.ms, 50), pct(self.ms, 95)
        verdict = ""
        if self.target is not None:
            met = "met" if p95 <= self.target else "NOT MET"
            verdict = f"; target p95 <= {self.target:.0f} ms: {met}"
        return (
            f"  {self.name:<36} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  max {max(self.ms):7.1f} ms"
            f"  (n={len(self.ms)}{f', {self.points} points' if self.points else ''}{verdict})"
        )


def time_queries(api: str, plan: Plan, requests: int, rounds: int) -> list[Timing]:
    rnd = random.Random(7)
    out: list[Timing] = []
    with httpx.Client(base_url=api, timeout=30) as client:
        login(client)
        now = time.time()
        for d in rnd.sample(range(plan.devices), min(5, plan.devices)):  # connections, caches
            chart(client, device_id(d), DAY, now)
        for name, span in CHARTS:
            t = Timing(f"chart {name}, one device, bucket=auto")
            for d in (rnd.randrange(plan.devices) for _ in range(requests)):
                started = time.perf_counter()
                t.points = chart(client, device_id(d), span, time.time())
                t.ms.append((time.perf_counter() - started) * 1000)
            out.append(t)
        t = Timing("device list, all devices", target=None)
        for _ in range(requests):
            started = time.perf_counter()
            r = client.get("/api/devices")
            r.raise_for_status()
            t.ms.append((time.perf_counter() - started) * 1000)
        t.points = len(r.json()["data"])
        out.append(t)
        one = Timing("latest values, one device", target=None)
        for d in (rnd.randrange(plan.devices) for _ in range(requests)):
            started = time.perf_counter()
            client.get(f"/api/devices/{device_id(d)}/latest").raise_for_status()
            one.ms.append((time.perf_counter() - started) * 1000)
        out.append(one)
        # What the device list loads beside the devices: one request for all.
        every = Timing(
            f"latest values, all {plan.devices} devices (GET /api/latest)", target=TARGET_LATEST_MS
        )
        for _ in range(requests):
            started = time.perf_counter()
            r = client.get("/api/latest")
            r.raise_for_status()
            every.ms.append((time.perf_counter() - started) * 1000)
        every.points = r.json()["count"]
        out.append(every)
    # For comparison: one /latest request per device, as a browser would fetch them
    # (6 connections at once, its per-host limit).
    each = Timing(f"latest values, all {plan.devices} devices, one request each", target=None)
    each.ms = asyncio.run(latest_of_all(api, plan, rounds))
    each.points = plan.devices
    out.append(each)
    return out


async def latest_of_all(api: str, plan: Plan, rounds: int) -> list[float]:
    limits = httpx.Limits(max_connections=6, max_keepalive_connections=6)
    async with httpx.AsyncClient(base_url=api, timeout=30, limits=limits) as client:
        r = await client.post(
            "/api/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}
        )
        r.raise_for_status()
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        sem = asyncio.Semaphore(6)

        async def one(dev: str) -> None:
            async with sem:
                (await client.get(f"/api/devices/{dev}/latest")).raise_for_status()

        out = []
        for _ in range(rounds):
            started = time.perf_counter()
            await asyncio.gather(*(one(device_id(d)) for d in range(plan.devices)))
            out.append((time.perf_counter() - started) * 1000)
        return out


async def explain(dsn: str, plan: Plan) -> None:
    """The plans of the queries behind one chart request (for where the time goes)."""
    conn = await asyncpg.connect(dsn)
    dev = device_id(plan.devices // 2)
    now = time.time()
    queries = [
        (
            "chart 1 y: hour rollups of one metric",
            "SELECT floor(bucket / $1) * $1 AS bts, sum(vsum), min(vmin), max(vmax), sum(vcount) "
            "FROM telemetry_rollup_1h WHERE device_id = $2 AND metric = $3 AND bucket >= $4 "
            "AND bucket < $5 GROUP BY bts ORDER BY bts",
            (43200.0, dev, "temperature", now - 365 * DAY, plan.mark_1h),
        ),
        (
            "chart 24 h: minute rollups of one metric",
            "SELECT floor(bucket / $1) * $1 AS bts, sum(vsum), min(vmin), max(vmax), sum(vcount) "
            "FROM telemetry_rollup_1m WHERE device_id = $2 AND metric = $3 AND bucket >= $4 "
            "AND bucket < $5 GROUP BY bts ORDER BY bts",
            (120.0, dev, "temperature", now - DAY, plan.mark_1m),
        ),
        (
            "metric names / latest values: newest raw rows of one device",
            "SELECT ts, metrics FROM telemetry WHERE device_id = $1 ORDER BY ts DESC LIMIT 200",
            (dev,),
        ),
        (
            "the newest raw row of every device in one statement (no endpoint asks this)",
            "SELECT d.id, t.ts, t.metrics FROM devices d CROSS JOIN LATERAL (SELECT ts, metrics "
            "FROM telemetry WHERE device_id = d.id ORDER BY ts DESC LIMIT 1) AS t",
            (),
        ),
        (
            "the same, bounded to the last day (its partitions only)",
            "SELECT d.id, t.ts, t.metrics FROM devices d CROSS JOIN LATERAL (SELECT ts, metrics "
            "FROM telemetry WHERE device_id = d.id AND ts >= $1 ORDER BY ts DESC LIMIT 1) AS t",
            (now - DAY,),
        ),
    ]
    try:
        for title, sql, args in queries:
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
            lines = [r[0] for r in rows]
            print(f"  EXPLAIN {title}:")
            # The top node, how the rows were found and what that read, and the timing.
            keep = [lines[0]] + [
                x
                for x in lines[1:]
                if any(k in x for k in ("Buffers:", "Scan", "Heap Fetches", "Time:"))
            ]
            for line in keep[:10]:
                print(f"    {line}")
    finally:
        await conn.close()


async def maintenance_round(dsn: str, env: dict[str, str]) -> tuple[float, float]:
    """One round of the leader's storage maintenance on the loaded database, in its two
    costly parts: (rolling up the minutes and hours since the watermarks, expiring old
    rollups) in seconds."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from iotp.settings import Settings

    settings = Settings(
        open=True,
        database_url=dsn,
        retention_days=float(env["IOTP_RETENTION_DAYS"]),
        rollup_minute_retention_days=float(env["IOTP_ROLLUP_MINUTE_RETENTION_DAYS"]),
        rollup_hour_retention_days=float(env["IOTP_ROLLUP_HOUR_RETENTION_DAYS"]),
    )
    engine = create_async_engine(settings.effective_database_url)
    try:
        now = time.time()
        started = time.perf_counter()
        async with engine.begin() as conn:
            await retention.rollup(conn, now)
        rolled = time.perf_counter() - started
        started = time.perf_counter()
        async with engine.begin() as conn:
            await retention.expire_rollups(conn, settings, now)
        return rolled, time.perf_counter() - started
    finally:
        await engine.dispose()


# ---- ingest on an empty database vs. on the loaded one while charts are read ---------


async def _stored(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(stored), 0) FROM ingest_counts"))
    finally:
        await conn.close()


async def _worker_connected(dsn: str, since: float) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT data::text FROM component_stats WHERE kind = 'worker' AND updated_at > $1",
            since,
        )
        return any('"mqtt_connected": true' in r[0] for r in rows)
    finally:
        await conn.close()


def ingest_rate(
    url: str, dsn: str, env: dict[str, str], messages: int, devices: int, prefix: str
) -> tuple[float, float]:
    """Stored msg/s end to end: first publish to the last row counted (ingest_counts, so
    counting does not scan a loaded table)."""
    wenv = {**env, "IOTP_DATABASE_URL": dsn, "IOTP_MQTT_CLIENT_ID": f"bench-history-{prefix}"}
    since = time.time()
    with h.platform_process("worker", wenv) as proc:
        deadline = time.monotonic() + 60
        while not asyncio.run(_worker_connected(dsn, since)):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("worker did not connect")
            time.sleep(0.2)
        base = asyncio.run(_stored(dsn))
        # Registration of the publishing devices first: the timed part is steady ingest.
        asyncio.run(
            h.raw_publish(url, devices=devices, messages=devices, prefix=prefix, seq_offset=10**9)
        )
        deadline = time.monotonic() + 120
        while asyncio.run(_stored(dsn)) < base + devices and time.monotonic() < deadline:
            time.sleep(0.1)
        base = asyncio.run(_stored(dsn))
        cpu = h.cpu_seconds(proc.pid)
        started = time.monotonic()
        asyncio.run(h.raw_publish(url, devices=devices, messages=messages, prefix=prefix))
        deadline = time.monotonic() + 300
        stored = 0
        while time.monotonic() < deadline:
            stored = asyncio.run(_stored(dsn)) - base
            if stored >= messages:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        cpu = h.cpu_seconds(proc.pid) - cpu
        if stored < messages:
            raise RuntimeError(f"only {stored} of {messages} messages stored")
    return messages / elapsed, cpu / messages * 1e6


def chart_loop(api: str, devices: int, rate: float, stop: Any, results: Any) -> None:
    """Charts opened one after another (24 h, 30 d, 1 y, random devices), ``rate`` per
    second or (0) back to back; a process of its own, so it takes no CPU from the load
    generator's interpreter."""
    rnd = random.Random(11)
    done: list[float] = []
    with httpx.Client(base_url=api, timeout=30) as client:
        login(client)
        begun = time.monotonic()
        while not stop.is_set():
            _, span = CHARTS[len(done) % 3]
            started = time.perf_counter()
            chart(client, device_id(rnd.randrange(devices)), span, time.time())
            done.append((time.perf_counter() - started) * 1000)
            if rate:
                ahead = begun + len(done) / rate - time.monotonic()
                if ahead > 0:
                    stop.wait(ahead)
    results.put(done)


def ingest_while_charts(
    url: str,
    dsn: str,
    env: dict[str, str],
    api: str,
    plan: Plan,
    args: Any,
    rate: float,
    round_: int,
) -> tuple[tuple[float, float], list[float]]:
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    results: Any = ctx.Queue()
    reader = ctx.Process(target=chart_loop, args=(api, plan.devices, rate, stop, results))
    reader.start()
    try:
        prefix = f"LOADED{int(rate * 10)}X{round_}X"
        stored = ingest_rate(url, dsn, env, args.ingest_messages, args.ingest_devices, prefix)
        stop.set()
        during: list[float] = results.get(timeout=60)
    finally:
        stop.set()
        reader.join(30)
        if reader.is_alive():
            reader.kill()
    return stored, during


# ---- the run -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=300, help="seconds between samples")
    parser.add_argument("--days-raw", type=int, default=30, help="IOTP_RETENTION_DAYS")
    parser.add_argument(
        "--days-minute", type=int, default=7, help="IOTP_ROLLUP_MINUTE_RETENTION_DAYS"
    )
    parser.add_argument(
        "--days-hour", type=int, default=365, help="IOTP_ROLLUP_HOUR_RETENTION_DAYS"
    )
    parser.add_argument(
        "--chunk-hours", type=int, default=240, help="hours per COPY before the raw window"
    )
    parser.add_argument("--requests", type=int, default=50, help="timed requests per query")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of all devices' latest")
    parser.add_argument("--ingest-messages", type=int, default=100_000)
    parser.add_argument("--ingest-devices", type=int, default=100)
    parser.add_argument(
        "--chart-rates",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[0.0, 2.0],
        help="charts per second read during ingest, one run each (0: back to back)",
    )
    parser.add_argument("--ingest-rounds", type=int, default=3)
    parser.add_argument("--lock", default="/tmp/iotp-bench.lock", help="held while measuring")
    parser.add_argument("--max-minutes", type=float, default=75, help="the whole run, at most")
    args = parser.parse_args()
    if HOUR % args.interval or DAY % args.interval:
        parser.error("--interval must divide an hour")

    def out_of_time(signum: int, frame: Any) -> None:
        raise TimeoutError(f"stopped after --max-minutes {args.max_minutes}")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(args.max_minutes * 60))

    plan = Plan(
        args.devices, args.interval, args.days_raw, args.days_minute, args.days_hour, time.time()
    )
    exp = plan.expected()
    print(f"machine: {h.machine()}; PostgreSQL at {h.PG_ADMIN.rsplit('@', 1)[-1]}", flush=True)
    print(
        f"data: {plan.devices:,} devices x {len(METRICS)} metrics every {plan.interval} s;"
        f" IOTP_RETENTION_DAYS={plan.days_raw} IOTP_ROLLUP_MINUTE_RETENTION_DAYS={plan.days_minute}"
        f" IOTP_ROLLUP_HOUR_RETENTION_DAYS={plan.days_hour}\n"
        f"  ~{exp['raw']:,} raw rows ({exp['raw'] * 3:,} samples), ~{exp['minute']:,} minute"
        f" rollups, ~{exp['hour']:,} hour rollups",
        flush=True,
    )
    env = {
        "IOTP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "IOTP_SECRET_KEY": "bench-" + "k" * 40,
        "IOTP_DATA_DIR": tempfile.mkdtemp(prefix="iotp-bench-history-"),
        "IOTP_LOG_LEVEL": "WARNING",
        "IOTP_RETENTION_DAYS": str(plan.days_raw),
        "IOTP_ROLLUP_MINUTE_RETENTION_DAYS": str(plan.days_minute),
        "IOTP_ROLLUP_HOUR_RETENTION_DAYS": str(plan.days_hour),
        "IOTP_BATCH_MAX_ROWS": "5000",
        "IOTP_BATCH_MAX_DELAY_MS": "100",
    }
    with h.mosquitto() as url, h.pg_database() as dsn:
        env["IOTP_MQTT_URL"] = url
        subprocess.run(
            [h.PY, "-m", "iotp.cli", "db", "upgrade"],
            env={**os.environ, **env, "IOTP_DATABASE_URL": dsn},
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print(f"load (COPY, oldest first, load average {loadavg()}):", flush=True)
        started = time.monotonic()
        counts = asyncio.run(load(dsn, plan, args.chunk_hours))
        copied = time.monotonic() - started
        asyncio.run(vacuum_analyze(dsn))
        loaded = time.monotonic() - started
        print(
            f"  loaded {counts['raw']:,} raw rows, {counts['minute']:,} minute rollups,"
            f" {counts['hour']:,} hour rollups in {copied / 60:.1f} min (COPY)"
            f" + {(loaded - copied) / 60:.1f} min (VACUUM ANALYZE) = {loaded / 60:.1f} min"
            f" (target <= 30 min: {'met' if loaded <= 1800 else 'NOT MET'}); load average {loadavg()}",
            flush=True,
        )
        disk = asyncio.run(sizes(dsn, counts))
        print("bytes on disk (tables + indexes + TOAST):")
        for key, label in (
            ("raw", "raw telemetry partitions"),
            ("minute", "telemetry_rollup_1m"),
            ("hour", "telemetry_rollup_1h"),
        ):
            size, rows = disk[key]
            unit = "per raw row (3 samples)" if key == "raw" else "per rollup row"
            extra = f", {size / max(rows, 1) / 3:.1f} B per sample" if key == "raw" else ""
            print(
                f"  {label:<26} {size / 2**30:6.2f} GiB / {rows:>12,} rows = {size / max(rows, 1):6.1f} B {unit}{extra}"
            )
        print(f"  database total {disk['database'][0] / 2**30:.2f} GiB", flush=True)

        port = h.free_port()
        api = f"http://127.0.0.1:{port}"
        with h.platform_process("api", {**env, "IOTP_DATABASE_URL": dsn}, "--port", str(port)):
            wait_health(api)
            with bench_lock(args.lock):
                print(f"queries over HTTP (load average {loadavg()}):", flush=True)
                for t in time_queries(api, plan, args.requests, args.rounds):
                    print(t.line(), flush=True)
                asyncio.run(explain(dsn, plan))
                rolled, expired = asyncio.run(maintenance_round(dsn, env))
                print(
                    f"  one maintenance round (the leader worker's, every 60 s): rollups"
                    f" {rolled:.2f} s, expiring old rollups {expired:.2f} s",
                    flush=True,
                )

            with bench_lock(args.lock):
                print(
                    f"ingest: {args.ingest_messages:,} messages from {args.ingest_devices} devices"
                    f" (load average {loadavg()})",
                    flush=True,
                )
                # Rounds alternate (empty, then loaded at each chart rate), so a change in
                # the machine's load between them shows; the best of each is reported.
                alone: list[tuple[float, float]] = []
                loaded: dict[float, list[tuple[float, float]]] = {r: [] for r in args.chart_rates}
                charts: dict[float, list[float]] = {r: [] for r in args.chart_rates}
                for n in range(args.ingest_rounds):
                    with h.pg_database() as empty:
                        subprocess.run(
                            [h.PY, "-m", "iotp.cli", "db", "upgrade"],
                            env={**os.environ, **env, "IOTP_DATABASE_URL": empty},
                            check=True,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                        result = ingest_rate(
                            url, empty, env, args.ingest_messages, args.ingest_devices, f"E{n}X"
                        )
                    alone.append(result)
                    line = [f"empty {result[0]:,.0f} msg/s ({result[1]:.0f} us/msg)"]
                    for rate in args.chart_rates:
                        result, during = ingest_while_charts(
                            url, dsn, env, api, plan, args, rate, n
                        )
                        loaded[rate].append(result)
                        charts[rate] += during
                        line.append(
                            f"loaded at {rate:g}/s {result[0]:,.0f} msg/s ({result[1]:.0f} us/msg)"
                        )
                    print(
                        f"  round {n + 1}: " + ", ".join(line) + f"; load {loadavg()}", flush=True
                    )
                best = max(r for r, _ in alone)
                print(
                    f"  empty database, best of {args.ingest_rounds}:"
                    f" {best:>9,.0f} msg/s stored, worker {min(c for _, c in alone):.0f} us/msg",
                    flush=True,
                )
                for rate in args.chart_rates:
                    top = max(r for r, _ in loaded[rate])
                    ratio = top / best
                    pace = f"{rate:g} charts/s" if rate else "charts back to back"
                    during = charts[rate]
                    # Each round's loaded run against that round's empty one: the
                    # machine's drift between rounds shows as the spread.
                    paired = sorted(
                        lr / er for (lr, _), (er, _) in zip(loaded[rate], alone, strict=True)
                    )
                    print(
                        f"  loaded database, {pace}, best of {args.ingest_rounds}:"
                        f" {top:>9,.0f} msg/s stored, worker"
                        f" {min(c for _, c in loaded[rate]):.0f} us/msg ({len(during)} charts,"
                        f" p50 {pct(during, 50):.0f} ms, p95 {pct(during, 95):.0f} ms);"
                        f" ratio {ratio:.2f} (target >= {TARGET_INGEST_RATIO}:"
                        f" {'met' if ratio >= TARGET_INGEST_RATIO else 'NOT MET'});"
                        f" round by round {', '.join(f'{r:.2f}' for r in paired)},"
                        f" median {statistics.median(paired):.2f}",
                        flush=True,
                    )
    signal.alarm(0)


if __name__ == "__main__":
    main()

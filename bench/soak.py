"""Soak: a day of a realistic fleet, compressed in time, against one worker on Mosquitto +
PostgreSQL; reports the worker's memory (RSS) over the run. Flat memory = no leak.

    python bench/soak.py                          # 24 h of 50 devices every 10 s (432,000 msgs)
    python bench/soak.py --hours 24 --devices 200 --interval 2 --rate 3000
    python bench/soak.py --compare-partitioning   # insert cost: plain vs partitioned table

Samples carry timestamps spread over the simulated day (ending now), so the worker's
maintenance (rollups, partitions, retention) runs over the day's data as it would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h


async def count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM telemetry"))
    finally:
        await conn.close()


async def worker_connected(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT count(*) FROM component_stats WHERE kind = 'worker' "
            "AND (data->>'mqtt_connected')::boolean"
        )
        return bool(value)
    finally:
        await conn.close()


async def publish_day(
    url: str, *, devices: int, interval: float, hours: float, rate: float, connections: int = 10
) -> int:
    """Every device reports every `interval` simulated seconds over `hours`, published at
    `rate` messages/s in total. Returns messages sent (all PUBACKed by the broker)."""
    host, port = h.split_url(url)
    steps = int(hours * 3600 / interval)
    day_start = time.time() - hours * 3600
    total = steps * devices
    per_conn = [list(range(c, devices, connections)) for c in range(connections)]

    async def one(c: int, ids: list[int]) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(h.connect_packet(f"soak-{c}-{uuid.uuid4().hex[:4]}"))
        await reader.readexactly(4)
        sent = acked = 0
        started = time.monotonic()
        my_rate = rate * len(ids) / devices
        for step in range(steps):
            ts = day_start + step * interval
            parts = []
            for d in ids:
                payload = b'{"temperature":%.2f,"humidity":%.1f,"gas":%d,"ts":%.3f,"seq":%d}' % (
                    20 + (step % 100) / 10,
                    40 + (step % 50) / 5,
                    80 + step % 40,
                    ts,
                    step,
                )
                parts.append(
                    h.publish_packet(f"devices/SOAK{d:05d}/data", payload, sent % 65535 + 1)
                )
                sent += 1
            writer.write(b"".join(parts))
            ahead = sent / my_rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
            while sent - acked > 2000:
                data = await reader.read(65536)
                acked += len(data) // 4
        while acked < sent:
            data = await reader.read(65536)
            if not data:
                break
            acked += len(data) // 4
        writer.write(b"\xe0\x00")
        await writer.drain()
        writer.close()

    await asyncio.gather(*(one(c, ids) for c, ids in enumerate(per_conn) if ids))
    return total


def soak(args: argparse.Namespace) -> None:
    print(f"machine: {h.machine()}")
    total = int(args.hours * 3600 / args.interval) * args.devices
    print(
        f"soak: {args.devices} devices every {args.interval} s for {args.hours} h simulated "
        f"= {total:,} messages at {args.rate:,.0f} msg/s (x{args.rate * args.interval / args.devices:,.0f} real time)",
        flush=True,
    )
    with h.mosquitto() as url, h.pg_database() as dsn:
        env = {
            "IOTP_MQTT_URL": url,
            "IOTP_DATABASE_URL": dsn,
            "IOTP_LOG_LEVEL": "WARNING",
            "IOTP_MQTT_CLIENT_ID": "soak-worker",
            "IOTP_MAINTENANCE_INTERVAL_SECONDS": "5",
            "IOTP_RETENTION_DAYS": str(args.retention_days),
        }
        import subprocess

        subprocess.run(
            [h.PY, "-m", "iotp.cli", "db", "upgrade"],
            env={**os.environ, **env},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with h.platform_process("worker", env) as proc:
            deadline = time.monotonic() + 120
            while not asyncio.run(worker_connected(dsn)):  # earlier messages would be lost
                if time.monotonic() > deadline:
                    raise RuntimeError("worker did not connect")
                time.sleep(0.2)
            samples: list[tuple[float, int, float]] = []
            started = time.monotonic()
            publisher = subprocess.Popen(
                [
                    h.PY,
                    __file__,
                    "--publish-only",
                    url,
                    "--devices",
                    str(args.devices),
                    "--interval",
                    str(args.interval),
                    "--hours",
                    str(args.hours),
                    "--rate",
                    str(args.rate),
                ]
            )
            next_sample = 0.0
            while True:
                now = time.monotonic() - started
                done = publisher.poll() is not None
                if now >= next_sample or done:
                    stored = asyncio.run(count(dsn))
                    samples.append((now, stored, h.rss_mb(proc.pid)))
                    print(
                        f"  t={now:6.0f} s  stored {stored:>10,}  worker RSS {samples[-1][2]:6.1f} MB",
                        flush=True,
                    )
                    next_sample += args.sample_seconds
                    if done and stored >= total:
                        break
                    if done and now > 600 + samples[0][0]:
                        break
                time.sleep(1)
        quarter = samples[max(1, len(samples) // 4)][2]
        end = samples[-1][2]
        peak = max(s[2] for s in samples)
        print(
            f"soak result: {samples[-1][1]:,} of {total:,} stored in {samples[-1][0]:.0f} s; "
            f"worker RSS {samples[0][2]:.1f} MB at start, {quarter:.1f} MB at 25%, {end:.1f} MB "
            f"at the end (peak {peak:.1f}); growth after warm-up {100 * (end - quarter) / quarter:+.1f}%"
        )


async def _insert_rate(dsn: str, rev: str, rows: int, batch: int) -> float:
    from iotp.db import migrate
    from iotp.db.engine import make_engine
    from iotp.services import telemetry

    engine = make_engine("postgresql+asyncpg://" + dsn.split("://", 1)[1])
    try:
        await migrate.upgrade(engine, rev)
        base = time.time() - 3600
        data = [
            telemetry.make_row(
                f"AB{i % 100:04d}", base + i / 100, i, {"t": 20.5, "h": 50.0, "g": 80}, None
            )
            for i in range(rows)
        ]
        t0 = time.perf_counter()
        for k in range(0, rows, batch):
            await telemetry.insert_rows(engine, data[k : k + batch])
        return rows / (time.perf_counter() - t0)
    finally:
        await engine.dispose()


def compare_partitioning(rows: int, batch: int, rounds: int) -> None:
    """Time the worker's insert (insert_rows: unnest + ON CONFLICT DO NOTHING) into the
    plain table (schema 0004) and the partitioned one (0005), interleaved."""
    results: dict[str, list[float]] = {"plain (0004)": [], "partitioned (0005)": []}
    for r in range(rounds):
        for label, rev in (("plain (0004)", "0004"), ("partitioned (0005)", "head")):
            with h.pg_database() as dsn:
                results[label].append(asyncio.run(_insert_rate(dsn, rev, rows, batch)))
        print(
            f"  round {r + 1}: "
            + ", ".join(f"{k} {v[-1]:,.0f} rows/s" for k, v in results.items()),
            flush=True,
        )
    for label, values in results.items():
        values.sort()
        print(
            f"{label}: median {values[len(values) // 2]:,.0f} rows/s over {rounds} rounds ({rows:,} rows, batches of {batch})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument(
        "--interval", type=float, default=10.0, help="simulated seconds between reports"
    )
    parser.add_argument("--hours", type=float, default=24.0, help="simulated duration")
    parser.add_argument("--rate", type=float, default=3000.0, help="messages per real second")
    parser.add_argument("--sample-seconds", type=float, default=15.0)
    parser.add_argument("--retention-days", type=float, default=0)
    parser.add_argument("--publish-only", metavar="URL")
    parser.add_argument("--compare-partitioning", action="store_true")
    args = parser.parse_args()
    if args.publish_only:
        asyncio.run(
            publish_day(
                args.publish_only,
                devices=args.devices,
                interval=args.interval,
                hours=args.hours,
                rate=args.rate,
            )
        )
    elif args.compare_partitioning:
        print(f"machine: {h.machine()}")
        compare_partitioning(100_000, 2000, 5)
    else:
        soak(args)


if __name__ == "__main__":
    main()

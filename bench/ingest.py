"""Ingest throughput, end to end: devices publish telemetry as fast as the broker takes
it; we measure messages per second stored in the database, and in the same run the raw
rate of the broker to a do-nothing subscriber (mosquitto_sub, C), and report the ratio.

    python bench/ingest.py                      # Mosquitto + PostgreSQL, then embedded
    python bench/ingest.py --stack postgres --messages 300000
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h


def raw_rate(url: str, messages: int, devices: int) -> float:
    host, port = h.split_url(url)
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            host,
            "-p",
            str(port),
            "-q",
            "1",
            "-t",
            "devices/#",
            "-C",
            str(messages),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    started = time.monotonic()
    asyncio.run(h.raw_publish(url, devices=devices, messages=messages, prefix="RAW"))
    sub.wait(600)
    return messages / (time.monotonic() - started)


async def _count_pg(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM telemetry"))
    finally:
        await conn.close()


async def _connected_pg(dsn: str, since: float) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT data::text FROM component_stats WHERE kind = 'worker' AND updated_at > $1",
            since,
        )
        return sum(1 for r in rows if '"mqtt_connected": true' in r[0])
    finally:
        await conn.close()


def _connected_sqlite(path: Path, since: float) -> int:
    try:
        with sqlite3.connect(path) as conn:
            rows = conn.execute(
                "SELECT data FROM component_stats WHERE kind = 'worker' AND updated_at > ?",
                (since,),
            ).fetchall()
    except sqlite3.Error:
        return 0
    return sum(
        1 for r in rows if '"mqtt_connected": true' in r[0] or '"mqtt_connected":true' in r[0]
    )


def _count_sqlite(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM telemetry").fetchone()[0])


def platform_rate(
    url: str,
    db_env: dict[str, str],
    count,
    connected,
    messages: int,
    devices: int,
    workers: int = 1,
) -> tuple[float, float, int]:
    """Returns (end-to-end stored msg/s, publish-side msg/s, rows stored)."""
    env = {
        **db_env,
        "IOTP_MQTT_URL": url,
        "IOTP_BATCH_MAX_ROWS": "5000",
        "IOTP_BATCH_MAX_DELAY_MS": "100",
        "IOTP_LOG_LEVEL": "WARNING",
    }
    procs = []
    # Migrate first, so the timed part is ingest only.
    subprocess.run(
        [h.PY, "-m", "iotp.cli", "db", "upgrade"],
        env={**__import__("os").environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    ctxs = []
    for i in range(workers):
        wenv = {**env, "IOTP_MQTT_CLIENT_ID": f"bench-worker-{i}"}
        if workers > 1:
            wenv["IOTP_MQTT_SHARE_GROUP"] = "bench"
        ctx = h.platform_process("worker", wenv)
        procs.append(ctx.__enter__())
        ctxs.append(ctx)
    try:
        deadline = time.monotonic() + 60
        while connected() < workers:  # messages sent before the subscription would be lost
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not connect")
            time.sleep(0.2)
        # Warm-up: one message per device, so the fleet is registered (as a running
        # fleet is) and the timed part measures steady-state ingest.
        asyncio.run(h.raw_publish(url, devices=devices, messages=devices, seq_offset=10**9))
        deadline = time.monotonic() + 120
        while count() < devices and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu_before = sum(h.cpu_seconds(p.pid) for p in procs)
        started = time.monotonic()
        publish_seconds = asyncio.run(h.raw_publish(url, devices=devices, messages=messages))
        deadline = time.monotonic() + 300
        stored = 0
        while time.monotonic() < deadline:
            stored = count() - devices
            if stored >= messages:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        cpu = sum(h.cpu_seconds(p.pid) for p in procs) - cpu_before
        print(
            f"  worker CPU: {cpu:.1f} s for {stored:,} messages = {cpu / max(stored, 1) * 1e6:.0f} us/msg "
            f"(capacity {stored / max(cpu, 1e-9):,.0f} msg per worker CPU-second)",
            flush=True,
        )
        return stored / elapsed, messages / publish_seconds, stored
    finally:
        for ctx in ctxs:
            ctx.__exit__(None, None, None)


def run_postgres(messages: int, devices: int, workers: int) -> dict[str, float]:
    with h.mosquitto() as url:
        raw = raw_rate(url, messages, devices)
        with h.pg_database() as dsn:
            t0 = time.time()
            rate, pub, stored = platform_rate(
                url,
                {"IOTP_DATABASE_URL": dsn},
                lambda: asyncio.run(_count_pg(dsn)),
                lambda: asyncio.run(_connected_pg(dsn, t0)),
                messages,
                devices,
                workers,
            )
    return {"raw": raw, "rate": rate, "publish": pub, "stored": stored, "messages": messages}


def run_embedded(messages: int, devices: int) -> dict[str, float]:
    import tempfile

    with h.embedded_broker() as url:
        raw = raw_rate(url, messages, devices)
        data = Path(tempfile.mkdtemp(prefix="iotp-bench-"))
        t0 = time.time()
        rate, pub, stored = platform_rate(
            url,
            {"IOTP_DATA_DIR": str(data)},
            lambda: _count_sqlite(data / "iotp.db"),
            lambda: _connected_sqlite(data / "iotp.db", t0),
            messages,
            devices,
        )
    return {"raw": raw, "rate": rate, "publish": pub, "stored": stored, "messages": messages}


def report(name: str, r: dict[str, float], target: float, ratio_target: float | None) -> str:
    ratio = r["rate"] / r["raw"]
    ok = r["rate"] >= target and (ratio_target is None or ratio >= ratio_target)
    exact = (
        "exact"
        if r["stored"] == r["messages"]
        else f"STORED {r['stored']:.0f} of {r['messages']:.0f}"
    )
    line = (
        f"{name}: stored {r['rate']:,.0f} msg/s end to end ({exact}); raw broker to a do-nothing "
        f"subscriber {r['raw']:,.0f} msg/s; ratio {ratio:.2f}; target >= {target:,.0f} msg/s"
        + (f" and ratio >= {ratio_target}" if ratio_target else "")
        + (" -> MET" if ok else " -> NOT MET")
    )
    print(line, flush=True)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stack", choices=["postgres", "embedded", "both"], default="both")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--embedded-messages", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {h.machine()}")
    if args.stack in ("postgres", "both"):
        r = run_postgres(args.messages, args.devices, args.workers)
        report(
            f"Mosquitto + PostgreSQL, {args.workers} worker(s), {args.messages:,} msgs x 3 metrics",
            r,
            15_000,
            0.3,
        )
    if args.stack in ("embedded", "both"):
        r = run_embedded(args.embedded_messages, args.devices)
        report(
            f"embedded amqtt + SQLite, {args.embedded_messages:,} msgs x 3 metrics", r, 2_000, None
        )


if __name__ == "__main__":
    main()

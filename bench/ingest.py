"""Ingest throughput, end to end: devices publish telemetry as fast as the broker takes
it; we measure messages per second stored in the database, and in the same run the raw
rate of the broker to a do-nothing subscriber (mosquitto_sub, C), and report the ratio.

    python bench/ingest.py                      # Mosquitto + PostgreSQL, then embedded
    python bench/ingest.py --stack embedded     # iotp serve: its Mosquitto, then amqtt
    python bench/ingest.py --stack postgres --messages 300000
    python bench/ingest.py --rules 100          # without, then with 100 active rules
    python bench/ingest.py --broker rabbitmq --workers 2   # RabbitMQ (MQTT plugin + AMQP)

On RabbitMQ (the local node, see .ci/rabbitmq; a vhost of its own per run) devices publish
through the MQTT plugin and the workers compete on one AMQP queue (IOTP_WORKER_SOURCE=
amqp); the raw rate is the same path to a do-nothing AMQP consumer of the same kind of
queue, acknowledging in batches (multiple=True) as the worker does, and per message.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
    rules: int = 0,  # automations: this many active threshold rules (see create_rules)
    stats: dict[str, float] | None = None,  # automations: gets "cpu_us" (worker CPU/msg)
    flapping: bool = False,  # automations: gas rules inside the generator's range
    extra_env: dict[str, str] | None = None,  # RabbitMQ: the AMQP source
) -> tuple[float, float, int]:
    """Returns (end-to-end stored msg/s, publish-side msg/s, rows stored)."""
    env = {
        **db_env,
        "IOTP_MQTT_URL": url,
        "IOTP_BATCH_MAX_ROWS": "5000",
        "IOTP_BATCH_MAX_DELAY_MS": "100",
        "IOTP_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    procs = []
    # Migrate first, so the timed part is ingest only.
    subprocess.run(
        [h.PY, "-m", "iotp.cli", "db", "upgrade"],
        env={**__import__("os").environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if rules:  # automations: before the worker starts, so it loads them at once
        asyncio.run(create_rules(env, rules, devices, flapping))
    ctxs = []
    for i in range(workers):
        wenv = {**env, "IOTP_MQTT_CLIENT_ID": f"bench-worker-{i}"}
        if workers > 1 and "IOTP_WORKER_SOURCE" not in env:
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
        if rules:  # automations: the warm-up's firings are acted on before the timing
            settle_alerts(env)
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
        if stats is not None:  # automations
            stats["cpu_us"] = cpu / max(stored, 1) * 1e6
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


# ---- RabbitMQ: --broker rabbitmq ----------------------------------------------------

RABBITMQ_MANAGEMENT = "http://127.0.0.1:15672/api"
RABBITMQ_MQTT_PORT = int(__import__("os").environ.get("IOTP_RABBITMQ_MQTT_PORT", "1885"))


def _rabbitmq_vhost(create: bool, name: str) -> None:
    import httpx

    with httpx.Client(base_url=RABBITMQ_MANAGEMENT, auth=("guest", "guest"), timeout=30) as c:
        if create:
            c.put(f"/vhosts/{name}").raise_for_status()
            perms = {"configure": ".*", "write": ".*", "read": ".*"}
            c.put(f"/permissions/{name}/guest", json=perms).raise_for_status()
        else:
            c.delete(f"/vhosts/{name}")


async def _amqp_drain(
    amqp_url: str, queue: str, messages: int, batch_ack: bool
) -> tuple[float, float]:
    """A do-nothing consumer of ``messages`` deliveries; returns (seconds, CPU seconds of
    this process) when it has them all."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10_000)
        q = await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        await q.bind("amq.topic", routing_key="devices.#")
        raw = await channel.get_underlay_channel()
        done = asyncio.get_running_loop().create_future()
        got = 0

        async def on_message(message: Any) -> None:
            nonlocal got
            got += 1
            tag = message.delivery.delivery_tag
            if not batch_ack:
                await raw.basic_ack(tag, wait=False)
            elif got % 1000 == 0 or got == messages:
                await raw.basic_ack(tag, multiple=True, wait=False)
            if got == messages and not done.done():
                done.set_result(None)

        await raw.basic_consume(q.name, on_message, no_ack=False)
        started, cpu = time.monotonic(), time.process_time()
        await done
        return time.monotonic() - started, time.process_time() - cpu
    finally:
        await connection.close()


def raw_rate_rabbitmq(
    mqtt_url: str, amqp_url: str, messages: int, devices: int, batch_ack: bool
) -> float:
    """MQTT publish (QoS 1) -> amq.topic -> quorum queue -> do-nothing AMQP consumer."""

    async def go() -> float:
        queue = f"bench.raw.{time.time_ns()}"
        consumer = asyncio.create_task(_amqp_drain(amqp_url, queue, messages, batch_ack))
        await asyncio.sleep(1.0)  # queue declared and bound before the first publish
        started = time.monotonic()
        await h.raw_publish(mqtt_url, devices=devices, messages=messages, prefix="RAW")
        await consumer
        return messages / (time.monotonic() - started)

    return asyncio.run(go())


async def _fill(amqp_url: str, queue: str, messages: int, devices: int) -> None:
    """``messages`` telemetry messages (as the MQTT plugin routes them) into ``queue``."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        q = await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        await q.bind("amq.topic", routing_key="devices.#")
        exchange = await channel.get_exchange("amq.topic")
        base_ts = time.time()
        for start in range(0, messages, 2000):
            sends = []
            for seq in range(start, min(start + 2000, messages)):
                body = b'{"temperature":%.2f,"humidity":%.1f,"gas":%d,"ts":%.4f,"seq":%d}' % (
                    20 + (seq % 100) / 10,
                    40 + (seq % 50) / 5,
                    80 + seq % 40,
                    base_ts + seq / 1e4,
                    seq,
                )
                message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                sends.append(exchange.publish(message, f"devices.BENCH{seq % devices:06d}.data"))
            await asyncio.gather(*sends)
    finally:
        await connection.close()


def backlog_rabbitmq(
    amqp_url: str, mqtt_url: str, messages: int, devices: int, workers: int
) -> dict[str, float]:
    """The consuming side alone, without the MQTT plugin's rate in the way: a backlog of
    ``messages`` in the queue, drained by a do-nothing consumer, then by the workers."""
    raw_cpu = {}
    for batch in (False, True):
        asyncio.run(_fill(amqp_url, "bench.backlog", messages, devices))
        seconds, cpu = asyncio.run(_amqp_drain(amqp_url, "bench.backlog", messages, batch))
        raw, raw_cpu[batch] = messages / seconds, cpu / messages * 1e6
        print(
            f"  backlog, do-nothing aio-pika/aiormq consumer acking "
            f"{'per 1,000 (multiple=True)' if batch else 'each message'}: {raw:,.0f} msg/s, "
            f"client CPU {raw_cpu[batch]:.0f} us/msg",
            flush=True,
        )
    import os

    with h.pg_database() as dsn:
        env = {
            "IOTP_DATABASE_URL": dsn,
            "IOTP_MQTT_URL": mqtt_url,
            "IOTP_WORKER_SOURCE": "amqp",
            "IOTP_AMQP_URL": amqp_url,
            "IOTP_AMQP_QUEUE": "iotp.backlog",
            "IOTP_BATCH_MAX_ROWS": "5000",
            "IOTP_LOG_LEVEL": "WARNING",
        }
        subprocess.run(
            [h.PY, "-m", "iotp.cli", "db", "upgrade"],
            env={**os.environ, **env},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        asyncio.run(_fill(amqp_url, "iotp.backlog", messages, devices))
        ctxs = [
            h.platform_process("worker", {**env, "IOTP_MQTT_CLIENT_ID": f"bench-backlog-{i}"})
            for i in range(workers)
        ]
        procs = [ctx.__enter__() for ctx in ctxs]
        try:
            first = 0
            while first == 0:  # timing starts with the first stored row (not at imports)
                first = asyncio.run(_count_pg(dsn))
                time.sleep(0.02)
            t0, cpu0 = time.monotonic(), sum(h.cpu_seconds(p.pid) for p in procs)
            deadline = t0 + 600
            stored = first
            while stored < messages and time.monotonic() < deadline:
                time.sleep(0.05)
                stored = asyncio.run(_count_pg(dsn))
            elapsed = time.monotonic() - t0
            cpu = sum(h.cpu_seconds(p.pid) for p in procs) - cpu0
        finally:
            for ctx in ctxs:
                ctx.__exit__(None, None, None)
    done = stored - first
    line = (
        f"  backlog of {messages:,}: workers drained {done / elapsed:,.0f} msg/s into PostgreSQL "
        f"({'exact' if stored == messages else f'STORED {stored} of {messages}'}), "
        f"worker CPU {cpu / max(done, 1) * 1e6:.0f} us/msg; do-nothing AMQP consumer "
        f"{raw:,.0f} msg/s; ratio {done / elapsed / raw:.2f}"
    )
    print(line, flush=True)
    return {"backlog_rate": done / elapsed, "backlog_raw": raw, "stored": stored}


def run_rabbitmq(messages: int, devices: int, workers: int, backlog: int = 0) -> dict[str, float]:
    from urllib.parse import quote

    vhost = f"iotp_bench_{time.time_ns()}"
    _rabbitmq_vhost(True, vhost)
    mqtt_url = f"mqtt://{quote(vhost + ':guest', safe='')}:guest@127.0.0.1:{RABBITMQ_MQTT_PORT}"
    amqp_url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    try:
        if backlog:
            backlog_rabbitmq(amqp_url, mqtt_url, backlog, devices, workers)
        raw_single = raw_rate_rabbitmq(mqtt_url, amqp_url, messages, devices, batch_ack=False)
        raw = raw_rate_rabbitmq(mqtt_url, amqp_url, messages, devices, batch_ack=True)
        print(
            f"  raw AMQP consumer: {raw:,.0f} msg/s acking per 1,000 (multiple=True), "
            f"{raw_single:,.0f} msg/s acking each message",
            flush=True,
        )
        with h.pg_database() as dsn:
            t0 = time.time()
            rate, pub, stored = platform_rate(
                mqtt_url,
                {"IOTP_DATABASE_URL": dsn},
                lambda: asyncio.run(_count_pg(dsn)),
                lambda: asyncio.run(_connected_pg(dsn, t0)),
                messages,
                devices,
                workers,
                extra_env={
                    "IOTP_WORKER_SOURCE": "amqp",
                    "IOTP_AMQP_URL": amqp_url,
                    "IOTP_AMQP_QUEUE": "iotp.telemetry",
                },
            )
    finally:
        _rabbitmq_vhost(False, vhost)
    return {
        "raw": raw,
        "raw_single": raw_single,
        "rate": rate,
        "publish": pub,
        "stored": stored,
        "messages": messages,
    }


def run_embedded(messages: int, devices: int, broker: str) -> dict[str, float]:
    """`iotp serve`'s stack: its supervised Mosquitto (or the amqtt fallback) + SQLite."""
    import tempfile

    start = h.supervised_mosquitto if broker == "mosquitto" else h.embedded_broker
    with start() as url:
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


# ---- automations: --rules N ----------------------------------------------------------

# Value ranges of the load generator (_harness.raw_publish) per metric.
METRIC_RANGES = {"temperature": (20.0, 30.0), "humidity": (40.0, 50.0), "gas": (80.0, 120.0)}


def _db_url(env: dict[str, str]) -> str:
    from iotp.settings import Settings

    if "IOTP_DATABASE_URL" in env:
        return Settings(database_url=env["IOTP_DATABASE_URL"]).effective_database_url
    return Settings(data_dir=Path(env["IOTP_DATA_DIR"])).effective_database_url


def bench_rule(i: int, devices: int, flapping: bool = False) -> dict[str, Any]:
    """Threshold rule i on one of the published metrics, scoped to the bench devices,
    with distinct thresholds in the top tenth of the metric's range: a few devices are
    past each (their alert is raised at warm-up), the rest are watched and stay below.

    The load generator's temperature and humidity are constant per device, but its gas
    alternates by 20 on every sample of a device: a gas threshold inside its range is
    crossed (fire, clear) on every other sample of a quarter of the devices. That is the
    ``flapping`` stress case; by default gas rules sit at gas-alarm levels (300+), which
    the generator never reaches, as a steady fleet never crosses them."""
    metric = list(METRIC_RANGES)[i % 3]
    lo, hi = METRIC_RANGES[metric]
    if metric == "gas" and not flapping:
        lo, hi = 300.0, 400.0
    return {
        "name": f"bench {metric} rule {i}",
        "scope": {"devices": [f"BENCH{d:06d}" for d in range(devices)]},
        "trigger": {
            "type": "threshold",
            "metric": metric,
            "op": "above",
            "value": round(lo + (hi - lo) * (0.9 + 0.003 * (i // 3)), 4),
            "hysteresis": (hi - lo) * 0.05,
        },
        "actions": [{"type": "alert", "severity": "warning", "auto_clear": True}],
        "cooldown_seconds": 60,
    }


async def create_rules(
    env: dict[str, str], rules: int, devices: int, flapping: bool = False
) -> None:
    """Through the services layer, as POST /api/rules stores them."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from iotp.automation.spec import RuleBody
    from iotp.db.engine import make_engine
    from iotp.services import rules as rule_service

    engine = make_engine(_db_url(env))
    try:
        async with async_sessionmaker(engine).begin() as session:
            for i in range(rules):
                body = RuleBody.model_validate(bench_rule(i, devices, flapping))
                await rule_service.create(session, body=body)
    finally:
        await engine.dispose()


async def _alert_count(url: str) -> int:
    from sqlalchemy import text

    from iotp.db.engine import make_engine

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM alerts"))).scalar_one())
    finally:
        await engine.dispose()


def settle_alerts(env: dict[str, str], quiet: float = 2.0, timeout: float = 120.0) -> int:
    """Waits until the alert count stops changing (the warm-up's firings are done)."""
    url = _db_url(env)
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = asyncio.run(_alert_count(url))
        if n != last:
            last, since = n, time.monotonic()
        elif n > 0 and time.monotonic() - since >= quiet:
            break
        time.sleep(0.25)
    print(f"  rules active: {last} alerts raised by the warm-up", flush=True)
    return last


def run_rules(messages: int, devices: int, rules: int, rounds: int, flapping: bool) -> str:
    """Without and with ``rules`` active rules, alternating, each on a fresh PostgreSQL
    database, one Mosquitto: worker CPU per message is the robust figure here."""
    cpu: dict[int, list[float]] = {0: [], rules: []}
    rate: dict[int, list[float]] = {0: [], rules: []}
    with h.mosquitto() as url:
        for r in range(rounds):
            for n in (0, rules):
                print(f"round {r + 1}/{rounds}, {n} rules:", flush=True)
                with h.pg_database() as dsn:
                    t0 = time.time()
                    stats: dict[str, float] = {}
                    e2e, _pub, stored = platform_rate(
                        url,
                        {"IOTP_DATABASE_URL": dsn},
                        lambda dsn=dsn: asyncio.run(_count_pg(dsn)),
                        lambda dsn=dsn, t0=t0: asyncio.run(_connected_pg(dsn, t0)),
                        messages,
                        devices,
                        rules=n,
                        stats=stats,
                        flapping=flapping,
                    )
                if stored < messages:
                    raise RuntimeError(f"stored {stored} of {messages} with {n} rules")
                cpu[n].append(stats["cpu_us"])
                rate[n].append(e2e)
    base, with_rules = min(cpu[0]), min(cpu[rules])
    ratio = base / with_rules  # capacity (msg per worker CPU-second) with / without
    e2e_ratio = max(rate[rules]) / max(rate[0])
    line = (
        f"Mosquitto + PostgreSQL, 1 worker, {messages:,} msgs x 3 metrics, {devices} devices, "
        f"{'flapping gas rules (stress)' if flapping else 'steady'}, "
        f"best of {rounds}: worker CPU {base:.1f} us/msg without rules, {with_rules:.1f} us/msg "
        f"with {rules} active rules; throughput with/without {ratio:.2f} "
        f"(end to end {max(rate[rules]):,.0f} / {max(rate[0]):,.0f} msg/s = {e2e_ratio:.2f}); "
        f"target >= 0.80" + (" -> MET" if ratio >= 0.8 else " -> NOT MET")
    )
    print(line, flush=True)
    return line


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
    parser.add_argument(
        "--broker",
        choices=["mosquitto", "rabbitmq"],
        default="mosquitto",
        help="rabbitmq: the local RabbitMQ (MQTT plugin on 1885, AMQP workers; PostgreSQL)",
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="with --broker rabbitmq: also time the workers draining a queued backlog of N",
    )
    parser.add_argument("--embedded-messages", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--rules",
        type=int,
        default=0,
        help="automations: compare ingest without and with this many active threshold rules",
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --rules: alternating rounds")
    parser.add_argument(
        "--flapping",
        action="store_true",
        help="with --rules: gas thresholds inside the generator's range (see bench_rule)",
    )
    args = parser.parse_args()
    print(f"machine: {h.machine()}")
    if args.rules:
        run_rules(args.messages, args.devices, args.rules, args.rounds, args.flapping)
        return
    if args.broker == "rabbitmq":
        r = run_rabbitmq(args.messages, args.devices, args.workers, args.backlog)
        report(
            f"RabbitMQ (MQTT in, AMQP queue) + PostgreSQL, {args.workers} worker(s), "
            f"{args.messages:,} msgs x 3 metrics",
            r,
            15_000,
            0.3,
        )
        return
    if args.stack in ("postgres", "both"):
        r = run_postgres(args.messages, args.devices, args.workers)
        report(
            f"Mosquitto + PostgreSQL, {args.workers} worker(s), {args.messages:,} msgs x 3 metrics",
            r,
            15_000,
            0.3,
        )
    if args.stack in ("embedded", "both"):
        for broker, label in (("mosquitto", "supervised Mosquitto"), ("amqtt", "amqtt fallback")):
            r = run_embedded(args.embedded_messages, args.devices, broker)
            report(
                f"iotp serve's {label} + SQLite, {args.embedded_messages:,} msgs x 3 metrics",
                r,
                2_000,
                None,
            )


if __name__ == "__main__":
    main()

"""Command round trip: with N simulated devices connected (each answers every command
with an ack at once), time REST request -> API claims and publishes it -> MQTT -> device
-> ack -> worker records it -> event -> REST response (`POST
/api/devices/{id}/commands?wait=true`), one command at a time, p50/p99; then a bulk
command to the whole fleet (commands/s). In the same run, the raw broker round trip
(publish -> responder -> reply) is measured as the floor, and the machine's load
average is printed (the figures mean little on a busy machine).

Where the time goes: each single command's round trip is split at the moment the device
receives it (request -> device, device -> response), and the CPU time the API, the
worker, PostgreSQL, Mosquitto and this process (the client and the fake devices) spend
per command is read from /proc: robust to a noisy machine where wall-clock figures drift.

    python bench/command_rtt.py [--devices 1000] [--commands 500] [--bulk-rounds 5]
        [--stack mosquitto-postgres|embedded-sqlite] [--code DIR]

``--code DIR`` runs the platform's processes from another checkout (DIR/src), the same
client and devices: run it alternately with and without to pair two versions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import gmqtt
import httpx
import orjson
from gmqtt.mqtt.constants import MQTTv311

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

ADMIN_PASSWORD = "bench-command-rtt-Pass-1"
CAPS = ["temperature", "relay:light", "relay:fan", "servo", "reboot"]


@contextmanager
def mosquitto_nodelay() -> Iterator[str]:
    """Mosquitto with TCP_NODELAY: small command/ack packets are not held back by
    Nagle's algorithm waiting for a delayed ACK (~40 ms on Linux)."""
    port = h.free_port()
    work = Path(tempfile.mkdtemp(prefix="iotp-bench-mosq-"))
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\nmax_queued_messages 10000000\nmax_inflight_messages 0\n"
        "log_dest none\n"
    )
    proc = subprocess.Popen([h.MOSQUITTO, "-c", str(conf)])
    try:
        h.wait_port(port)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


class Device:
    received_at = 0.0  # when a device last received a command (perf_counter)

    def __init__(self, url: str, device_id: str) -> None:
        self.url = url
        self.id = device_id
        self.client = gmqtt.Client(device_id)
        self.client.on_message = self._on_message

    async def start(self) -> None:
        host, port = h.split_url(self.url)
        await self.client.connect(host, port, version=MQTTv311, keepalive=120)
        self.client.subscribe(f"devices/{self.id}/commands", qos=1)
        # These devices send no telemetry: an hour-long report interval keeps the
        # platform's last-seen timeout (3 missed reports) from calling them offline.
        info = {
            "protocol": 1,
            "type": "bench",
            "firmware": "1.0.0",
            "capabilities": CAPS,
            "interval": 3600,
        }
        self.client.publish(f"devices/{self.id}/info", orjson.dumps(info), qos=1, retain=True)
        self.client.publish(f"devices/{self.id}/status", b"online", qos=1, retain=True)

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        Device.received_at = time.perf_counter()
        cmd = orjson.loads(payload)
        ack = {"id": cmd["id"], "status": "ok", "result": {}}
        self.client.publish(f"devices/{self.id}/ack", orjson.dumps(ack), qos=1)
        return 0


async def broker_floor(url: str, rounds: int) -> list[float]:
    host, port = h.split_url(url)
    responder = gmqtt.Client("bench-responder")
    asker = gmqtt.Client("bench-asker")
    waiting: dict[bytes, asyncio.Future[None]] = {}

    def respond(client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        responder.publish("bench/rtt/resp", payload, qos=1)
        return 0

    def answered(client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        fut = waiting.pop(payload, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
        return 0

    responder.on_message = respond
    asker.on_message = answered
    await responder.connect(host, port, version=MQTTv311)
    await asker.connect(host, port, version=MQTTv311)
    responder.subscribe("bench/rtt/req", qos=1)
    asker.subscribe("bench/rtt/resp", qos=1)
    await asyncio.sleep(0.5)
    out = []
    loop = asyncio.get_running_loop()
    for i in range(rounds):
        key = str(i).encode()
        fut = waiting[key] = loop.create_future()
        t0 = time.perf_counter()
        asker.publish("bench/rtt/req", key, qos=1)
        await asyncio.wait_for(fut, 5)
        out.append(time.perf_counter() - t0)
    await responder.disconnect()
    await asker.disconnect()
    return out


def named_cpu_seconds(name: str) -> float:
    """CPU time so far of every process whose command name is ``name``."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().split("(", 1)[1].split(")", 1)[0] == name:
                total += h.cpu_seconds(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return total


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    out = {name: h.cpu_seconds(pid) for name, pid in pids.items()}
    out["postgres"] = named_cpu_seconds("postgres")
    out["mosquitto"] = named_cpu_seconds("mosquitto")
    out["client+devices"] = h.cpu_seconds(os.getpid())
    return out


def cpu_text(per: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in per.items())


def bulk_lines(rates: list[float], res: dict[str, Any]) -> str:
    """The bulk rounds' lines (none with --bulk-rounds 0)."""
    if not rates:
        return ""
    last = res["bulks"][-1]
    commits = res["commits_bulk"]
    return (
        f"  bulk to all, {len(rates)} rounds: best {rates[-1]:.0f}, median "
        f"{statistics.median(rates):.0f} commands/s (last: {last['created']} created, "
        f"{last['acked']} acked in {last['seconds']:.2f} s)\n"
        f"    CPU ms per command: {cpu_text(res['cpu_bulk'])}"
        + ("" if commits is None else f"; PostgreSQL commits per command: {commits:.3f}")
        + "\n"
    )


def cpu_per(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {k: (after[k] - before[k]) * 1000 / n for k in before}


async def pg_commits(dsn: str | None) -> int | None:
    """Transactions committed in the platform's database so far (PostgreSQL only)."""
    if dsn is None or not dsn.startswith("postgresql"):
        return None
    import asyncpg

    await asyncio.sleep(1.5)  # backends report their statistics at most once a second
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(value)
    finally:
        await conn.close()


async def recorded(http: httpx.AsyncClient) -> None:
    """Until the worker has recorded every command's end: the API answers a bulk from
    the devices' own acks, ahead of the worker."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        by_status = (await http.get("/api/commands/stats")).json()["by_status"]
        if not by_status.get("sending") and not by_status.get("sent"):
            return
        await asyncio.sleep(0.05)


async def measure(
    url: str,
    api: str,
    n_devices: int,
    n_commands: int,
    bulk_rounds: int,
    pids: dict[str, int],
    dsn: str | None = None,
) -> dict[str, Any]:
    devices = [Device(url, f"RTT{i:06d}") for i in range(n_devices)]
    for i in range(0, n_devices, 100):
        await asyncio.gather(*(d.start() for d in devices[i : i + 100]))
    async with httpx.AsyncClient(base_url=api, timeout=60) as http:
        r = await http.post(
            "/api/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}
        )
        r.raise_for_status()
        http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            body = (await http.get("/api/devices", params={"status": "online", "limit": 1})).json()
            ready = [d for d in body["data"] if d["capabilities"]]
            if body["count"] >= n_devices and ready:
                break
            if os.environ.get("RTT_DEBUG"):
                print("online:", body["count"], flush=True)
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # let capabilities of the last devices land
        rng = random.Random(1)
        for _ in range(20):  # warm-up
            d = rng.choice(devices)
            await http.post(f"/api/devices/{d.id}/commands?wait=true", json={"command": "ping"})
        rtts: list[float] = []
        legs: list[tuple[float, float]] = []
        failures = 0
        cpu0 = cpu_snapshot(pids)
        for i in range(n_commands):
            d = rng.choice(devices)
            body = {
                "command": "relay",
                "params": {"name": "light", "state": "on" if i % 2 else "off"},
            }
            t0 = time.perf_counter()
            r = await http.post(f"/api/devices/{d.id}/commands?wait=true", json=body)
            t1 = time.perf_counter()
            rtts.append(t1 - t0)
            legs.append((Device.received_at - t0, t1 - Device.received_at))
            if os.environ.get("RTT_DEBUG"):
                print(
                    r.status_code, r.json().get("status"), f"{rtts[-1] * 1000:.1f} ms", flush=True
                )
            if r.status_code != 201 or r.json()["status"] != "acked":
                failures += 1
        cpu1 = cpu_snapshot(pids)
        await recorded(http)
        commits1 = await pg_commits(dsn)
        cpu_bulk0 = cpu_snapshot(pids)
        bulks: list[dict[str, Any]] = []
        for _ in range(bulk_rounds):
            t0 = time.perf_counter()
            r = await http.post(
                "/api/commands/bulk?wait=true",
                json={"selector": {"all": True}, "command": "ping", "timeout": 30},
            )
            bulk = r.json()
            bulks.append(
                {
                    "seconds": time.perf_counter() - t0,
                    "acked": bulk.get("by_status", {}).get("acked", 0),
                    "created": bulk.get("created", 0),
                }
            )
        await recorded(http)  # the bulk's cost includes the worker's recording
        cpu2 = cpu_snapshot(pids)
        commits2 = await pg_commits(dsn)
    floor = await broker_floor(url, 500)
    for d in devices:
        await d.client.disconnect()
    return {
        "rtts": rtts,
        "legs": legs,
        "failures": failures,
        "bulks": bulks,
        "floor": floor,
        "cpu_single": cpu_per(cpu0, cpu1, n_commands),
        "cpu_bulk": cpu_per(cpu_bulk0, cpu2, n_devices * bulk_rounds) if bulk_rounds else {},
        "commits_bulk": (
            None
            if commits1 is None or commits2 is None or not bulk_rounds
            else (commits2 - commits1) / (n_devices * bulk_rounds)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument(
        "--stack", choices=["mosquitto-postgres", "embedded-sqlite"], default="mosquitto-postgres"
    )
    parser.add_argument(
        "--no-nodelay", action="store_true", help="Mosquitto without set_tcp_nodelay"
    )
    parser.add_argument("--bulk-rounds", type=int, default=5)
    parser.add_argument(
        "--code", type=Path, help="run the platform from this checkout's src/ (pairing)"
    )
    args = parser.parse_args()
    code = "this checkout"
    if args.code is not None:
        rev = subprocess.run(
            ["git", "-C", str(args.code), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        code = f"{args.code} ({rev or 'not a git checkout'})"
    print(f"machine: {h.machine()}; load average at start {os.getloadavg()[0]:.1f}; code: {code}")
    if args.stack == "mosquitto-postgres":
        broker = h.mosquitto() if args.no_nodelay else mosquitto_nodelay()
        database = h.pg_database()
    else:
        broker = h.embedded_broker()
        database = None
    with broker as url:
        if database is not None:
            dsn_cm = database
        else:
            tmp = tempfile.mkdtemp(prefix="iotp-bench-rtt-")
            dsn_cm = nullcontext(f"sqlite:///{tmp}/iotp.db")  # type: ignore[assignment]
        with dsn_cm as dsn:
            port = h.free_port()
            env = {
                "IOTP_DATABASE_URL": dsn,
                "IOTP_MQTT_URL": url,
                "IOTP_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "IOTP_LOG_LEVEL": "WARNING",
                "IOTP_DATA_DIR": tempfile.mkdtemp(prefix="iotp-bench-rtt-data-"),
            }
            if args.code is not None:
                env["PYTHONPATH"] = str(args.code.resolve() / "src")
            h.migrate(env)
            with (
                h.platform_process("worker", env) as worker,
                h.platform_process("api", env, "--port", str(port)) as api_proc,
            ):
                api = f"http://127.0.0.1:{port}"
                h.wait_health(api)
                res = asyncio.run(
                    measure(
                        url,
                        api,
                        args.devices,
                        args.commands,
                        args.bulk_rounds,
                        {"api": api_proc.pid, "worker": worker.pid},
                        dsn if database is not None else None,
                    )
                )
    rtts, floor, legs = res["rtts"], res["floor"], res["legs"]
    to_device = [a for a, _ in legs]
    to_response = [b for _, b in legs]
    rates = sorted(b["acked"] / b["seconds"] for b in res["bulks"])

    ms = h.percentile_ms
    print(
        f"{args.stack}{' (no TCP_NODELAY)' if args.no_nodelay else ''}, "
        f"{args.devices} devices connected, {len(rtts)} single commands "
        f"({res['failures']} not acked):\n"
        f"  REST -> device -> ack -> REST (?wait=true): p50 {ms(rtts, 50):.1f} ms, "
        f"p99 {ms(rtts, 99):.1f} ms, mean {statistics.mean(rtts) * 1000:.1f} ms, "
        f"max {max(rtts) * 1000:.1f} ms\n"
        f"    request -> device p50 {ms(to_device, 50):.1f} / p99 {ms(to_device, 99):.1f} ms; "
        f"device -> response p50 {ms(to_response, 50):.1f} / p99 {ms(to_response, 99):.1f} ms\n"
        f"    CPU ms per command: {cpu_text(res['cpu_single'])}\n"
        + bulk_lines(rates, res)
        + f"  raw broker round trip (publish -> responder -> reply): p50 {ms(floor, 50):.2f} ms, "
        f"p99 {ms(floor, 99):.2f} ms\n"
        f"  load average at the end: {os.getloadavg()[0]:.1f} (2 cores)"
    )


if __name__ == "__main__":
    main()

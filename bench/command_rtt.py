"""Command round trip: with N simulated devices connected (each answers every command
with an ack at once), time REST request -> API claims and publishes it -> MQTT -> device
-> ack -> worker records it -> event -> REST response (`POST
/api/devices/{id}/commands?wait=true`), one command at a time, p50/p99; then a bulk
command to the whole fleet (commands/s). In the same run, the raw broker round trip
(publish -> responder -> reply) is measured as the floor, and the machine's load
average is printed (the figures mean little on a busy machine).

    python bench/command_rtt.py [--devices 1000] [--commands 500] [--stack mosquitto-postgres|embedded-sqlite]
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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] * 1000


class Device:
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


async def measure(url: str, api: str, n_devices: int, n_commands: int) -> dict[str, Any]:
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
        failures = 0
        for i in range(n_commands):
            d = rng.choice(devices)
            body = {
                "command": "relay",
                "params": {"name": "light", "state": "on" if i % 2 else "off"},
            }
            t0 = time.perf_counter()
            r = await http.post(f"/api/devices/{d.id}/commands?wait=true", json=body)
            rtts.append(time.perf_counter() - t0)
            if os.environ.get("RTT_DEBUG"):
                print(
                    r.status_code, r.json().get("status"), f"{rtts[-1] * 1000:.1f} ms", flush=True
                )
            if r.status_code != 201 or r.json()["status"] != "acked":
                failures += 1
        t0 = time.perf_counter()
        r = await http.post(
            "/api/commands/bulk?wait=true",
            json={"selector": {"all": True}, "command": "ping", "timeout": 30},
        )
        bulk_seconds = time.perf_counter() - t0
        bulk = r.json()
    floor = await broker_floor(url, 500)
    for d in devices:
        await d.client.disconnect()
    return {
        "rtts": rtts,
        "failures": failures,
        "bulk_seconds": bulk_seconds,
        "bulk_acked": bulk.get("by_status", {}).get("acked", 0),
        "bulk_created": bulk.get("created", 0),
        "floor": floor,
    }


def wait_health(api: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("API did not become healthy")


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
    args = parser.parse_args()
    print(f"machine: {h.machine()}; load average at start {os.getloadavg()[0]:.1f}")
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
            subprocess.run(
                [h.PY, "-m", "iotp.cli", "db", "upgrade"],
                env={**os.environ, **env},
                check=True,
                stdout=subprocess.DEVNULL,
            )
            with (
                h.platform_process("worker", env),
                h.platform_process("api", env, "--port", str(port)),
            ):
                api = f"http://127.0.0.1:{port}"
                wait_health(api)
                res = asyncio.run(measure(url, api, args.devices, args.commands))
    rtts, floor = res["rtts"], res["floor"]
    p50, p99 = pct(rtts, 50), pct(rtts, 99)
    print(
        f"{args.stack}{' (no TCP_NODELAY)' if args.no_nodelay else ''}, "
        f"{args.devices} devices connected, {len(rtts)} single commands "
        f"({res['failures']} not acked):\n"
        f"  REST -> device -> ack -> REST (?wait=true): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"mean {statistics.mean(rtts) * 1000:.1f} ms, max {max(rtts) * 1000:.1f} ms "
        f"(target p99 <= 30 ms -> {'MET' if p99 <= 30 else 'NOT MET'})\n"
        f"  bulk to all: {res['bulk_created']} created, {res['bulk_acked']} acked in "
        f"{res['bulk_seconds']:.2f} s = {res['bulk_acked'] / res['bulk_seconds']:.0f} commands/s\n"
        f"  raw broker round trip (publish -> responder -> reply): p50 {pct(floor, 50):.2f} ms, "
        f"p99 {pct(floor, 99):.2f} ms\n"
        f"  load average at the end: {os.getloadavg()[0]:.1f} (2 cores)"
    )


if __name__ == "__main__":
    main()

"""Live latency: 1,000 devices publish one message per second each; we measure the time
from publish to the moment a dashboard's WebSocket receives the event (p50/p99), and in
the same run the time from publish to a plain MQTT subscriber (the broker's own floor).

    python bench/latency.py [--devices 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import gmqtt
import orjson
import websockets
from gmqtt.mqtt.constants import MQTTv311

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

ADMIN_PASSWORD = "bench-latency-Pass-1"


async def publisher(url: str, devices: int, seconds: float) -> int:
    conns, drains = await h.raw_devices(url, "LAT", devices)
    sent = 0
    start = time.monotonic()
    tick = 1.0 / devices
    seq = 0
    while time.monotonic() - start < seconds:
        for i, (writer, topic) in enumerate(conns):
            target = start + seq + i * tick
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = b'{"temperature":21.5,"ts":%.6f,"seq":%d}' % (time.time(), seq)
            writer.write(h.publish_packet(topic, payload, (seq % 65535) + 1))
            sent += 1
        seq += 1
    h.close_raw_devices(conns, drains)
    return sent


async def ws_receiver(api: str, token: str, out: list[float], stop: asyncio.Event) -> None:
    async with websockets.connect(api.replace("http", "ws", 1) + f"/api/ws?token={token}") as ws:
        await ws.send(
            orjson.dumps(
                {"action": "subscribe", "events": ["device_data"], "devices": ["*"]}
            ).decode()
        )
        await ws.recv()
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            now = time.time()
            event = orjson.loads(msg)
            if event.get("type") == "device_data" and event["device_id"].startswith("LAT"):
                out.append(now - event["ts"])


async def mqtt_receiver(url: str, out: list[float], ready: asyncio.Event) -> Any:
    host, port = h.split_url(url)
    client = gmqtt.Client("latency-floor")

    def on_message(c: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        out.append(time.time() - orjson.loads(payload)["ts"])
        return 0

    client.on_message = on_message
    client.on_subscribe = lambda *a: ready.set()
    await client.connect(host, port, version=MQTTv311)
    client.subscribe("devices/+/data", qos=0)
    return client


async def measure(
    url: str, api: str, devices: int, seconds: float
) -> tuple[list[float], list[float], int]:
    token = h.login(api, ADMIN_PASSWORD)
    ws_lat: list[float] = []
    floor: list[float] = []
    stop = asyncio.Event()
    ready = asyncio.Event()
    sub = await mqtt_receiver(url, floor, ready)
    await asyncio.wait_for(ready.wait(), 10)
    ws_task = asyncio.create_task(ws_receiver(api, token, ws_lat, stop))
    await asyncio.sleep(1.0)
    sent = await publisher(url, devices, seconds)
    await asyncio.sleep(1.0)
    stop.set()
    await ws_task
    await sub.disconnect()
    return ws_lat, floor, sent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    print(f"machine: {h.machine()}")
    with h.mosquitto() as url, h.pg_database() as dsn:
        port = h.free_port()
        env = {
            "IOTP_DATABASE_URL": dsn,
            "IOTP_MQTT_URL": url,
            "IOTP_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "IOTP_LOG_LEVEL": "WARNING",
        }

        h.migrate(env)
        with (
            h.platform_process(
                "worker", {**env, "IOTP_LOG_LEVEL": os.environ.get("WLOG", "WARNING")}
            ),
            h.platform_process("api", env, "--port", str(port)),
        ):
            api = f"http://127.0.0.1:{port}"
            h.wait_health(api)
            ws_lat, floor, sent = asyncio.run(measure(url, api, args.devices, args.seconds))
    p50, p99 = h.percentile_ms(ws_lat, 50), h.percentile_ms(ws_lat, 99)
    f50, f99 = h.percentile_ms(floor, 50), h.percentile_ms(floor, 99)
    print(
        f"{args.devices} devices x 1 msg/s for {args.seconds:.0f} s: {sent} sent, {len(ws_lat)} received on the WebSocket\n"
        f"  publish -> WebSocket client: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(ws_lat) * 1000:.1f} ms "
        f"(target p99 <= 20 ms -> {'MET' if p99 <= 20 else 'NOT MET'})\n"
        f"  publish -> plain MQTT subscriber (broker floor): p50 {f50:.1f} ms, p99 {f99:.1f} ms"
    )


if __name__ == "__main__":
    main()

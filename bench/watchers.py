"""Many watchers: 20 dashboard WebSocket clients, in a process of their own, each
subscribed to all `device_data`, while 1,000 devices publish 2,000 msg/s in total.

Measured: publish -> WebSocket latency over every client, whether every client got every
event or was told exactly how many it lost, the API process's CPU per delivered event,
and a client that stops reading (it must delay nobody else). The floor, in the same run
and under the same load: 20 plain MQTT subscribers in a process of their own.

The two phases run one after the other (floor first), so they do not compete for this
machine's cores. Devices publish without credentials: open mode on purpose (the broker's
account check is measured in bench/broker_auth.py).

    python bench/watchers.py [--devices 1000] [--rate 2000] [--clients 20] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

ADMIN_PASSWORD = "bench-watchers-Pass-1"
PREFIX = "WAT"
DRAIN_SECONDS = 3.0


# -- the watchers (run as child processes of this script) ---------------------------


async def ws_watchers(
    api: str, token: str, clients: int, stalled: int, seconds: float, batch: bool
) -> dict[str, Any]:
    import websockets

    url = api.replace("http", "ws", 1) + f"/api/ws?token={token}"
    subscribe = orjson.dumps(
        {"action": "subscribe", "events": ["device_data"], "devices": ["*"], "batch": batch}
    ).decode()
    results: list[dict[str, Any]] = []

    async def connect() -> Any:
        ws = await websockets.connect(url, max_queue=16)
        await ws.send(subscribe)
        while orjson.loads(await ws.recv()).get("type") != "subscribed":
            pass
        return ws

    async def watch(ws: Any, until: float, out: dict[str, Any]) -> None:
        lat: list[float] = out["latency"]
        while True:
            left = until - time.time()
            if left <= 0:
                return
            try:
                text = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                return
            now = time.time()
            frame = orjson.loads(text)
            out["frames"] += 1
            for event in frame if isinstance(frame, list) else (frame,):
                kind = event.get("type")
                if kind == "device_data" and event["device_id"].startswith(PREFIX):
                    lat.append(now - event["ts"])
                    out["received"] += 1
                elif kind == "dropped":
                    out["dropped"] = event["count"]

    readers = [await connect() for _ in range(clients)]
    sleepers = [await Stalled.connect(api, token, subscribe) for _ in range(stalled)]
    print("ready", flush=True)
    start_line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    until = float(start_line) + seconds + DRAIN_SECONDS
    outs = [
        {"latency": [], "received": 0, "dropped": 0, "frames": 0, "stalled": False} for _ in readers
    ]
    await asyncio.gather(*(watch(ws, until, o) for ws, o in zip(readers, outs, strict=True)))
    results.extend(outs)
    # The stalled clients read nothing until the load is over; then they catch up, and
    # must be told how many events they lost.
    for stalled_client in sleepers:
        results.append(await stalled_client.catch_up(DRAIN_SECONDS))
    for ws in readers:
        await ws.close()
    return {"clients": results}


class Stalled:
    """A WebSocket client that stops reading altogether (a frozen browser tab): a raw
    socket with a small receive buffer, which does not even answer pings, so neither
    the kernel nor a client library absorbs the stream for it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, api: str, token: str, subscribe: str) -> Stalled:
        host, port = api.split("://", 1)[1].rsplit(":", 1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        # A small stream buffer too: asyncio reads ahead up to twice the limit.
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /api/ws?token={token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"WebSocket refused: {head[:80]!r}")
        payload = subscribe.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        client = cls(reader, writer)
        while True:
            frame = await client._frame()
            if frame is not None and b'"subscribed"' in frame:
                return client

    async def _frame(self) -> bytes | None:
        """The next text frame's payload (None for a control frame)."""
        head = await self.reader.readexactly(2)
        size = head[1] & 0x7F
        if size == 126:
            size = int.from_bytes(await self.reader.readexactly(2), "big")
        elif size == 127:
            size = int.from_bytes(await self.reader.readexactly(8), "big")
        payload = await self.reader.readexactly(size)
        return payload if head[0] & 0x0F == 0x1 else None

    async def catch_up(self, seconds: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "latency": [], "received": 0, "dropped": 0, "frames": 0, "stalled": True,
            "closed": False,
        }  # fmt: skip
        until = time.time() + seconds
        try:
            while (left := until - time.time()) > 0:
                try:
                    payload = await asyncio.wait_for(self._frame(), left)
                except TimeoutError:
                    break
                if payload is None:
                    continue
                out["frames"] += 1
                frame = orjson.loads(payload)
                for event in frame if isinstance(frame, list) else (frame,):
                    if event.get("type") == "device_data":
                        out["received"] += 1
                    elif event.get("type") == "dropped":
                        out["dropped"] = event["count"]
        except (asyncio.IncompleteReadError, ConnectionError):
            out["closed"] = True  # the server gave up on it
        self.writer.close()
        return out


async def mqtt_watchers(url: str, clients: int, seconds: float) -> dict[str, Any]:
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv311

    host, port = h.split_url(url)
    outs: list[dict[str, Any]] = []
    subs = []
    for i in range(clients):
        out: dict[str, Any] = {
            "latency": [],
            "received": 0,
            "dropped": 0,
            "frames": 0,
            "stalled": False,
        }
        outs.append(out)
        client = gmqtt.Client(f"watchers-floor-{i}")
        ready = asyncio.Event()

        def on_message(
            c: Any, topic: str, payload: bytes, qos: int, props: Any, o: dict[str, Any] = out
        ) -> int:
            o["latency"].append(time.time() - orjson.loads(payload)["ts"])
            o["received"] += 1
            return 0

        client.on_message = on_message
        client.on_subscribe = lambda *a, r=ready: r.set()
        await client.connect(host, port, version=MQTTv311)
        client.subscribe("devices/+/data", qos=0)
        await asyncio.wait_for(ready.wait(), 10)
        subs.append(client)
    print("ready", flush=True)
    start_line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.sleep(max(0.0, float(start_line) + seconds + DRAIN_SECONDS - time.time()))
    for client in subs:
        await client.disconnect()
    return {"clients": outs}


def child(args: argparse.Namespace) -> None:
    if args.role == "ws":
        result = asyncio.run(
            ws_watchers(
                args.api, args.token, args.clients, args.stalled, args.seconds, not args.no_batch
            )
        )
    else:
        result = asyncio.run(mqtt_watchers(args.url, args.clients, args.seconds))
    Path(args.out).write_text(json.dumps(result))


# -- the load and the report ----------------------------------------------------------


async def publish(url: str, devices: int, rate: float, seconds: float) -> int:
    """Each device publishes rate/devices messages per second, spread evenly."""
    conns, drains = await h.raw_devices(url, PREFIX, devices)
    tick = 1.0 / rate
    start = time.monotonic()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        target = start + sent * tick
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        # Catch up in a burst if the loop fell behind, so the rate holds on average.
        while sent < total and start + sent * tick <= time.monotonic():
            writer, topic = conns[sent % devices]
            payload = b'{"temperature":21.5,"ts":%.6f}' % time.time()
            writer.write(h.publish_packet(topic, payload, (sent % 65535) + 1))
            sent += 1
    h.close_raw_devices(conns, drains)
    return sent


def phase(
    role_args: list[str], url: str, args: argparse.Namespace, api_pid: int | None
) -> tuple[dict[str, Any], int, float]:
    """Start the watchers' process, wait until all are subscribed, publish the load;
    return the watchers' results, messages sent and the API's CPU seconds meanwhile."""
    out = Path(tempfile.mkstemp(prefix="iotp-watchers-", suffix=".json")[1])
    proc = subprocess.Popen(
        [h.PY, __file__, *role_args, "--seconds", str(args.seconds), "--out", str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the watchers did not start")
        time.sleep(1.0)
        cpu0 = h.cpu_seconds(api_pid) if api_pid else 0.0
        start = time.time()
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()
        sent = asyncio.run(publish(url, args.devices, args.rate, args.seconds))
        proc.wait(args.seconds + 60)
        cpu = (h.cpu_seconds(api_pid) - cpu0) if api_pid else 0.0
        return json.loads(out.read_text()), sent, cpu
    finally:
        if proc.poll() is None:
            proc.kill()
        out.unlink(missing_ok=True)


def summary(name: str, result: dict[str, Any], sent: int) -> tuple[float, float, bool]:
    watching = [c for c in result["clients"] if not c["stalled"]]
    lat = [x for c in watching for x in c["latency"]]
    p50, p99 = h.percentile_ms(lat, 50), h.percentile_ms(lat, 99)
    complete = all(c["received"] + c["dropped"] == sent for c in watching)
    got = [c["received"] for c in watching]
    print(
        f"  {name}: {len(watching)} clients, received min {min(got)} / max {max(got)} of {sent}; "
        f"dropped (told) {sum(c['dropped'] for c in watching)}; every event or told: "
        f"{'yes' if complete else 'NO'}\n"
        f"    publish -> client: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(lat) * 1000:.1f} ms"
    )
    return p50, p99, complete


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=2000, help="messages per second, all devices")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--stalled", type=int, default=1, help="WebSocket clients that stop reading"
    )
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument(
        "--no-batch",
        action="store_true",
        help="one event per WebSocket frame (the default before batching)",
    )
    # Child roles.
    parser.add_argument("--role", choices=["ws", "mqtt"], help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        child(args)
        return

    print(f"machine: {h.machine()}")
    print(
        f"{args.devices} devices, {args.rate:.0f} msg/s in total for {args.seconds:.0f} s; "
        f"{args.clients} watchers (+{args.stalled} that stop reading), "
        f"{'one event per frame' if args.no_batch else 'batched frames'}; Mosquitto + PostgreSQL"
    )
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
            h.platform_process("worker", env),
            h.platform_process("api", env, "--port", str(port)) as api_proc,
        ):
            api = f"http://127.0.0.1:{port}"
            h.wait_health(api)
            # Register the devices first, so both phases see the same steady state.
            asyncio.run(publish(url, args.devices, args.rate, args.devices / args.rate + 1))
            time.sleep(3)
            floor, floor_sent, _ = phase(
                ["--role", "mqtt", "--url", url, "--clients", str(args.clients)], url, args, None
            )
            token = h.login(api, ADMIN_PASSWORD)
            ws, ws_sent, api_cpu = phase(
                [
                    "--role", "ws", "--api", api, "--token", token,
                    "--clients", str(args.clients), "--stalled", str(args.stalled),
                    *(["--no-batch"] if args.no_batch else []),
                ],
                url,
                args,
                api_proc.pid,
            )  # fmt: skip
    print("results:")
    _f50, f99, _ = summary("plain MQTT subscribers (floor)", floor, floor_sent)
    _w50, w99, complete = summary("dashboard WebSocket clients", ws, ws_sent)
    delivered = sum(c["received"] for c in ws["clients"])
    for c in ws["clients"]:
        if c["stalled"]:
            print(
                f"  a client that stopped reading: received {c['received']}, told it lost "
                f"{c['dropped']} (sum {c['received'] + c['dropped']} of {ws_sent})"
                + ("; the API closed its connection" if c.get("closed") else "")
            )
    frames = sum(c["frames"] for c in ws["clients"])
    print(
        f"  frames: {frames} for {delivered} events ({delivered / max(frames, 1):.1f} events per frame)\n"
        f"  API CPU: {api_cpu:.2f} s for {delivered} delivered events = "
        f"{api_cpu / max(delivered, 1) * 1e6:.1f} us per event per client\n"
        f"  p99 ratio WebSocket / floor: {w99 / f99:.2f}; target p99 <= 20 ms: "
        f"{'MET' if w99 <= 20 and complete else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()

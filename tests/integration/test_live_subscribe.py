"""A WebSocket client told "subscribed" receives everything published from then on, even
the first message right after the answer.

The API takes its raw data stream from the broker only when a client asks for it; it must
answer once the broker has acknowledged that subscription (SUBACK), not before. To make the
race certain rather than occasional, the API process (`python -m iotp.cli api`) talks to
Mosquitto through a relay that holds everything it sends for a moment, as a loaded broker
or a distant one would; the device publishes to Mosquitto directly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from tests.fault.procs import run_cluster, token
from tests.support import MqttTestClient, eventually, migrate_database, mosquitto_server

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

UPSTREAM_DELAY = 0.5  # seconds the relay holds what the API sends to the broker
ROUNDS = 3


UNSUBSCRIBE = 0xA  # MQTT packet type


class DelayingRelay:
    """TCP relay: client -> server bytes are held ``delay`` seconds (order kept), server ->
    client bytes pass at once. Counts the UNSUBSCRIBE packets the client sends."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.unsubscribes = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, self.delay, self._watch())),
            asyncio.create_task(self._pump(up_reader, writer, 0.0)),
        ]
        self.tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            w.close()

    def _watch(self) -> Callable[[bytes], None]:
        """A reader of one connection's MQTT packets (fixed header: the type in the first
        byte's high nibble, then the remaining length, 7 bits a byte)."""
        pending = bytearray()

        def feed(chunk: bytes) -> None:
            pending.extend(chunk)
            while len(pending) >= 2:
                length, shift, at = 0, 0, 1
                while True:
                    if at >= len(pending):
                        return
                    byte = pending[at]
                    length |= (byte & 0x7F) << shift
                    shift, at = shift + 7, at + 1
                    if not byte & 0x80:
                        break
                if len(pending) < at + length:
                    return
                if pending[0] >> 4 == UNSUBSCRIBE:
                    self.unsubscribes += 1
                del pending[: at + length]

        return feed

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        delay: float,
        watch: Callable[[bytes], None] | None = None,
    ) -> None:
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, chunk = await held.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))  # the link's delay
                writer.write(chunk)
                await writer.drain()
                held.task_done()

        sender = asyncio.create_task(release())
        try:
            while chunk := await reader.read(65536):
                if watch is not None:
                    watch(chunk)
                held.put_nowait((time.monotonic() + delay, chunk))
            await held.join()  # what is on the way still arrives
        finally:
            sender.cancel()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self.tasks:
            task.cancel()


@pytest.fixture
async def slow_api(tmp_path: Path) -> AsyncIterator[tuple[int, str, DelayingRelay]]:
    """An API process whose link to Mosquitto is slow; yields (API port, broker URL, the
    relay)."""
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    await migrate_database(db_url)
    with mosquitto_server() as mosq:
        relay = DelayingRelay(mosq.port, UPSTREAM_DELAY)
        relay_url = f"mqtt://127.0.0.1:{await relay.start()}"
        try:
            async with run_cluster("livesub", tmp_path, db_url, relay_url, apis=1) as cluster:
                yield cluster.apis[0][1], mosq.url, relay
        finally:
            await relay.stop()


async def subscribe(ws: Any, event: str) -> None:
    """Asks for one event type from every device; returns once the API says subscribed."""
    request = {"action": "subscribe", "events": [event], "devices": ["*"]}
    await ws.send(orjson.dumps(request).decode())
    reply = orjson.loads(await asyncio.wait_for(ws.recv(), 15))
    assert reply["type"] == "subscribed"


async def test_data_published_right_after_subscribed_is_received(
    slow_api: tuple[int, str, DelayingRelay],
) -> None:
    port, broker_url, relay = slow_api
    device = await MqttTestClient(broker_url, "LIVESUB1").connect()
    url = f"ws://127.0.0.1:{port}/api/ws?token={await token(port)}"
    try:
        for i in range(ROUNDS):
            # Each round the API is asked for the data stream by its first client again.
            async with websockets.connect(url) as ws:
                await subscribe(ws, "device_data")
                device.publish("devices/LIVESUB1/data", orjson.dumps({"t": i, "seq": i}))
                event = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert event["type"] == "device_data"
                assert event["payload"]["seq"] == i
            # No client left: the API drops the data stream, so the next round asks for it
            # afresh.
            await eventually(lambda i=i: relay.unsubscribes > i, what="the API unsubscribed")
    finally:
        with contextlib.suppress(Exception):
            await device.close()


async def test_an_event_published_right_after_subscribed_is_received(
    slow_api: tuple[int, str, DelayingRelay],
) -> None:
    """Event types too are taken from the broker only while a client here asks for them
    (command updates always): the first status change published after "subscribed"
    arrives. (This stack has no worker: the test publishes the event as one would.)"""
    port, broker_url, relay = slow_api
    device = await MqttTestClient(broker_url, "LIVESUB2").connect()
    url = f"ws://127.0.0.1:{port}/api/ws?token={await token(port)}"
    try:
        for i in range(ROUNDS):
            async with websockets.connect(url) as ws:
                await subscribe(ws, "device_status")
                status = "offline" if i % 2 else "online"
                change = {
                    "type": "device_status",
                    "device_id": "LIVESUB2",
                    "ts": time.time(),
                    "payload": {"status": status, "previous": "unknown", "reason": "reported"},
                }
                device.publish("iotp/events/device_status/LIVESUB2", orjson.dumps(change))
                event = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert event == change
            await eventually(lambda i=i: relay.unsubscribes > i, what="the API unsubscribed")
    finally:
        with contextlib.suppress(Exception):
            await device.close()

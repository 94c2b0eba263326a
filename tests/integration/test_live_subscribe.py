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
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import websockets

from iotp.db import migrate
from iotp.db.engine import make_engine
from tests.fault.procs import STARTING, api, api_healthy, platform_env, token
from tests.support import MqttTestClient, eventually, start_mosquitto

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

UPSTREAM_DELAY = 0.5  # seconds the relay holds what the API sends to the broker
ROUNDS = 3


class DelayingRelay:
    """TCP relay: client -> server bytes are held ``delay`` seconds (order kept), server ->
    client bytes pass at once."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, self.delay)),
            asyncio.create_task(self._pump(up_reader, writer, 0.0)),
        ]
        self.tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
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
async def slow_api(tmp_path: Path) -> AsyncIterator[tuple[int, str]]:
    """An API process whose link to Mosquitto is slow; yields (API port, broker URL)."""
    mosq = start_mosquitto()
    relay = DelayingRelay(mosq.port, UPSTREAM_DELAY)
    relay_port = await relay.start()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    await engine.dispose()
    proc, port = api(
        "livesub-api", platform_env(db_url, f"mqtt://127.0.0.1:{relay_port}"), tmp_path
    )
    proc.start()
    try:
        await eventually(lambda: api_healthy(port), timeout=60, interval=0.1, retry_on=STARTING)
        yield port, mosq.url
    except BaseException:
        print(proc.tail())
        raise
    finally:
        proc.stop()
        await relay.stop()
        mosq.stop()


async def test_data_published_right_after_subscribed_is_received(
    slow_api: tuple[int, str],
) -> None:
    port, broker_url = slow_api
    device = await MqttTestClient(broker_url, "LIVESUB1").connect()
    url = f"ws://127.0.0.1:{port}/api/ws?token={await token(port)}"
    try:
        for i in range(ROUNDS):
            # Each round the API is asked for the data stream by its first client again.
            async with websockets.connect(url) as ws:
                request = {"action": "subscribe", "events": ["device_data"], "devices": ["*"]}
                await ws.send(orjson.dumps(request).decode())
                reply = orjson.loads(await asyncio.wait_for(ws.recv(), 15))
                assert reply["type"] == "subscribed"
                device.publish("devices/LIVESUB1/data", orjson.dumps({"t": i, "seq": i}))
                event = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert event["type"] == "device_data"
                assert event["payload"]["seq"] == i
            # No client left: the API drops the data stream (through the slow link). It
            # tells no one when it has, so the next round waits out the link's delay.
            await asyncio.sleep(UPSTREAM_DELAY * 2 + 0.3)
    finally:
        with contextlib.suppress(Exception):
            await device.close()

"""Fault tolerance with real processes and exact counts: a worker SIGKILLed mid-stream,
the broker restarted mid-stream, PostgreSQL unreachable for 30 s, the API restarted
under its WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bench._harness import connect_packet, publish_packet, raw_publish, split_url
from iotp.db import migrate
from iotp.db.engine import make_engine
from iotp.netutil import free_port
from iotp.settings import Settings
from tests.fault.procs import (
    STARTING,
    LiveClient,
    PersistentMosquitto,
    api,
    api_healthy,
    persistent_mosquitto,
    pg_value,
    platform_env,
    token,
    worker,
    workers_connected,
)
from tests.support import MqttTestClient, create_pg_database, drop_pg_database, eventually

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto, pytest.mark.slow]

# A process start (imports, migrations check, connect) takes seconds on an idle machine and
# over a minute on a loaded CI runner; these bound a hang, they measure nothing.
STARTUP_SECONDS = 150


@pytest.fixture
async def pg() -> AsyncIterator[str]:
    dsn = await create_pg_database()
    engine = make_engine(Settings(database_url=dsn).effective_database_url)
    await migrate.upgrade(engine)
    await engine.dispose()
    yield dsn
    await drop_pg_database(dsn)


@pytest.fixture
def mosquitto() -> AsyncIterator[PersistentMosquitto]:
    server = persistent_mosquitto()
    yield server  # type: ignore[misc]
    server.stop()


async def stored(dsn: str) -> int:
    return int(await pg_value(dsn, "SELECT count(*) FROM telemetry"))


async def resilient_publish(
    url: str, *, device: str, count: int, rate: float, window: int = 200
) -> int:
    """A device that keeps its unacknowledged QoS 1 messages and sends them again after a
    reconnect (as the firmware does). Returns how many reconnects it needed."""
    host, port = split_url(url)
    base_ts = time.time()
    pending: dict[int, bytes] = {}
    next_n = 0
    reconnects = -1
    started = time.monotonic()
    while next_n < count or pending:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(connect_packet(f"{device}-{uuid.uuid4().hex[:4]}"))
            connack = await asyncio.wait_for(reader.readexactly(4), 5)
            if connack[3] != 0:
                raise ConnectionError("refused")
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            await asyncio.sleep(0.2)  # the broker is away: try again shortly, as a device does
            continue
        reconnects += 1
        try:
            for packet in pending.values():  # again, with the same (device, ts, seq)
                writer.write(packet)
            while next_n < count or pending:
                while next_n < count and len(pending) < window:
                    if next_n > (time.monotonic() - started) * rate:
                        break
                    mid = next_n % 65535 + 1
                    payload = b'{"v":%d,"ts":%.3f,"seq":%d}' % (
                        next_n,
                        base_ts + next_n / 1e3,
                        next_n,
                    )
                    pending[mid] = publish_packet(f"devices/{device}/data", payload, mid)
                    writer.write(pending[mid])
                    next_n += 1
                await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.readexactly(4), 0.05)
                except TimeoutError:
                    continue
                if data[0] == 0x40:
                    pending.pop(int.from_bytes(data[2:4], "big"), None)
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            await asyncio.sleep(0.2)  # the link broke: reconnect shortly, as a device does
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return reconnects


async def test_worker_killed_mid_stream_loses_nothing(
    tmp_path: Path, pg: str, mosquitto: PersistentMosquitto
) -> None:
    total = 8000
    env = platform_env(pg, mosquitto.url)
    w = worker("fault-worker", env, tmp_path).start()  # stable client id, clean_session=false
    a, port = api("fault-api-k", env, tmp_path)
    try:
        t0 = time.time()
        await eventually(
            lambda: _one_connected(pg, t0), timeout=STARTUP_SECONDS, interval=0.1, retry_on=STARTING
        )
        a.start()  # reads the figures at the end; starts while the stream runs
        publishing = asyncio.create_task(
            raw_publish(mosquitto.url, devices=10, messages=total, rate=1000, prefix="KILL")
        )
        await eventually(
            lambda: _at_least(pg, 1500), timeout=STARTUP_SECONDS, interval=0.1, retry_on=STARTING
        )
        w.kill()  # SIGKILL: no flush, no goodbye; unacknowledged messages stay with the broker
        killed_at = await stored(pg)
        assert killed_at < total
        await asyncio.sleep(1.0)  # the worker stays dead a moment while the stream goes on
        w.start()
        await publishing
        await eventually(
            lambda: _at_least(pg, total), timeout=STARTUP_SECONDS, interval=0.1, retry_on=STARTING
        )
        await asyncio.sleep(0.5)  # bounded: a duplicate would be stored by now
        assert await stored(pg) == total  # nothing lost, nothing stored twice
        # The platform's stored-messages figure counts the same rows, the ones stored
        # before the kill included (stats are published every 0.5 s here: give it 3 s).
        await eventually(
            lambda: api_healthy(port), timeout=STARTUP_SECONDS, interval=0.1, retry_on=STARTING
        )
        seen: list[dict[str, int]] = []
        try:
            await eventually(
                lambda: _stats_stored(port, total, seen), timeout=3, interval=0.1, retry_on=STARTING
            )
        except AssertionError:
            raise AssertionError(f"{total} rows, but the stats say {seen[-1:]}") from None
    except BaseException:
        print(w.tail(), a.tail())
        raise
    finally:
        w.stop()
        a.stop()


async def _stats_stored(port: int, total: int, seen: list[dict[str, int]]) -> bool:
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.get(
            f"http://127.0.0.1:{port}/api/stats",
            headers={"Authorization": f"Bearer {await token(port)}"},
        )
    figures = r.raise_for_status().json()
    seen.append({k: figures[k] for k in ("messages_stored", "messages_duplicate")})
    return bool(figures["messages_stored"] == total)


async def test_broker_restart_mid_stream_loses_nothing(
    tmp_path: Path, pg: str, mosquitto: PersistentMosquitto
) -> None:
    total = 3000
    env = platform_env(pg, mosquitto.url)
    w = worker("fault-worker-b", env, tmp_path).start()
    a, port = api("fault-api-b", env, tmp_path)
    a.start()
    try:
        t0 = time.time()
        await eventually(
            lambda: _one_connected(pg, t0), timeout=40, interval=0.1, retry_on=STARTING
        )
        await eventually(lambda: api_healthy(port), timeout=40, interval=0.1, retry_on=STARTING)
        publishing = asyncio.gather(
            *(
                resilient_publish(mosquitto.url, device=f"BRK{i}", count=total // 3, rate=200)
                for i in range(3)
            )
        )
        await eventually(lambda: _at_least(pg, 600), timeout=30, interval=0.1, retry_on=STARTING)
        mosquitto.stop()  # persistence: the worker's session and queue are saved
        await asyncio.sleep(1.5)  # the broker stays away a moment while devices retry
        mosquitto.start()
        reconnects = await asyncio.wait_for(publishing, 60)
        assert all(r >= 1 for r in reconnects), reconnects
        await eventually(lambda: _at_least(pg, total), timeout=30, interval=0.1, retry_on=STARTING)
        await asyncio.sleep(0.5)  # bounded: a duplicate would be stored by now
        assert await stored(pg) == total
        # The worker and the API reconnected by themselves.
        t1 = time.time()
        await eventually(
            lambda: _one_connected(pg, t1), timeout=20, interval=0.1, retry_on=STARTING
        )
        await eventually(lambda: api_healthy(port), timeout=20, interval=0.1, retry_on=STARTING)
    except BaseException:
        print(w.tail(), a.tail())
        raise
    finally:
        w.stop()
        a.stop()


class CuttableProxy:
    """TCP proxy between the platform and PostgreSQL that the test can cut: while cut,
    open connections are dropped and new ones refused."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        await self.cut()


async def test_postgres_unavailable_for_30_seconds(
    tmp_path: Path, pg: str, mosquitto: PersistentMosquitto
) -> None:
    pg_host_port = int(pg.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = CuttableProxy(pg_host_port)
    await proxy.start()
    proxied = pg.replace(f":{pg_host_port}/", f":{proxy.port}/")
    env = platform_env(proxied, mosquitto.url, store_retry_max_seconds=2)
    w = worker("fault-worker-pg", env, tmp_path).start()
    a, port = api("fault-api-pg", env, tmp_path)
    a.start()
    dev = None
    try:
        t0 = time.time()
        await eventually(
            lambda: _one_connected(pg, t0), timeout=40, interval=0.1, retry_on=STARTING
        )
        await eventually(lambda: api_healthy(port), timeout=40, interval=0.1, retry_on=STARTING)
        dev = await MqttTestClient(mosquitto.url, "PGDOWN").connect()
        for i in range(100):
            dev.publish("devices/PGDOWN/data", f'{{"v": {i}, "seq": {i}}}')
        await eventually(lambda: _at_least(pg, 100), timeout=20, interval=0.1, retry_on=STARTING)

        await proxy.cut()
        cut_at = time.monotonic()
        for i in range(100, 1100):  # arrives while the database is away
            dev.publish("devices/PGDOWN/data", f'{{"v": {i}, "seq": {i}}}')
        async with httpx.AsyncClient(timeout=10) as http:

            async def degraded() -> bool:
                r = await http.get(f"http://127.0.0.1:{port}/api/health")
                return r.status_code == 503 and r.json()["database"] == "error"

            await eventually(degraded, timeout=20, interval=0.1, retry_on=STARTING)
        # The database stays away for 30 s in all (the outage this test is about).
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - cut_at)))
        assert await stored(pg) == 100  # held, not stored, not dropped
        await proxy.start()  # the database is back
        await eventually(lambda: _at_least(pg, 1100), timeout=30, interval=0.1, retry_on=STARTING)
        await eventually(lambda: api_healthy(port), timeout=20, interval=0.1, retry_on=STARTING)
        await asyncio.sleep(0.5)  # bounded: a duplicate would be stored by now
        assert await stored(pg) == 1100
    except BaseException:
        print(w.tail(), a.tail())
        raise
    finally:
        if dev is not None:
            await dev.close()
        w.stop()
        a.stop()
        await proxy.close()


async def test_api_restart_websocket_clients_reconnect_and_resubscribe(
    tmp_path: Path, pg: str, mosquitto: PersistentMosquitto
) -> None:
    env = platform_env(pg, mosquitto.url)
    w = worker("fault-worker-api", env, tmp_path).start()
    a, port = api("fault-api-restart", env, tmp_path)
    a.start()
    client = LiveClient(port, ["device_data"])
    dev = None
    try:
        t0 = time.time()
        await eventually(
            lambda: _one_connected(pg, t0), timeout=40, interval=0.1, retry_on=STARTING
        )
        await eventually(lambda: api_healthy(port), timeout=40, interval=0.1, retry_on=STARTING)
        client.start()
        await asyncio.wait_for(client.subscribed.wait(), 20)
        dev = await MqttTestClient(mosquitto.url, "WSDEV").connect()
        dev.publish("devices/WSDEV/data", '{"v": 1, "seq": 1}')
        await eventually(lambda: _received(client, 1), timeout=20, interval=0.1, retry_on=STARTING)

        a.stop()  # the API goes away under its client
        await eventually(
            lambda: _not(client.subscribed.is_set()), timeout=20, interval=0.1, retry_on=STARTING
        )
        a.start()
        await eventually(lambda: api_healthy(port), timeout=40, interval=0.1, retry_on=STARTING)
        await asyncio.wait_for(client.subscribed.wait(), 30)
        assert client.connects >= 2
        # "subscribed" comes once the broker has acknowledged the API's data subscription.
        dev.publish("devices/WSDEV/data", '{"v": 2, "seq": 2}')
        await eventually(lambda: _received(client, 2), timeout=20, interval=0.1, retry_on=STARTING)
        assert [e["payload"]["seq"] for e in client.received] == [1, 2]
    except BaseException:
        print(w.tail(), a.tail())
        raise
    finally:
        await client.close()
        if dev is not None:
            await dev.close()
        w.stop()
        a.stop()


async def _one_connected(dsn: str, since: float) -> bool:
    return await workers_connected(dsn, since) >= 1


async def _at_least(dsn: str, n: int) -> bool:
    return await stored(dsn) >= n


async def _received(client: LiveClient, n: int) -> bool:
    return client.count("device_data") >= n


async def _not(value: bool) -> bool:
    return not value

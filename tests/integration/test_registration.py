"""Registration and the control-plane writer on real databases (SQLite and PostgreSQL):
every event from ingest is announced once its transaction has committed, exactly once per
real change, even when two workers register the same new devices at the same moment or a
grouped transaction rolls back and its jobs run again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db import migrate
from iotp.db.engine import make_engine
from iotp.services import devices as device_service
from iotp.settings import Settings
from iotp.worker.ingest import Event
from iotp.worker.service import Worker as ServiceWorker
from tests.support import (
    DATABASES,
    create_pg_database,
    drop_pg_database,
    mosquitto_server,
    run_worker,
)

Published = list[tuple[str, str, dict[str, Any], float]]


@pytest.fixture(params=DATABASES)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'reg.db'}"
    else:
        url = Settings(database_url=await create_pg_database()).effective_database_url
    engine = make_engine(url)
    await migrate.upgrade(engine)
    await engine.dispose()
    try:
        yield url
    finally:
        if request.param == "postgres":
            await drop_pg_database(url)


@pytest.fixture
def mqtt_url() -> Iterator[str]:
    with mosquitto_server() as server:
        yield server.url


class Announcing:
    """A worker's ingest pipeline, recording what it announces (every event still goes
    on to the worker's own publisher)."""

    def __init__(self, worker: ServiceWorker) -> None:
        self.ingestor = worker.ingestor
        self.published: Published = []
        forward = self.ingestor.publish

        def record(*event: Any) -> None:
            self.published.append(event)
            forward(*event)

        self.ingestor.publish = record

    def data(self, device_id: str, seq: int) -> asyncio.Future[None] | None:
        result = self.ingestor.handle(f"devices/{device_id}/data", b'{"t": 1, "seq": %d}' % seq)
        return None if result is None else asyncio.ensure_future(result)

    def announced(self, event_type: str) -> Counter[str]:
        return Counter(d for t, d, _, _ in self.published if t == event_type)


@contextlib.asynccontextmanager
async def worker(tmp_path: Path, db_url: str, mqtt_url: str) -> AsyncIterator[Announcing]:
    """A worker with its own engine (connection pool), as one worker process has."""
    async with run_worker(tmp_path, db_url, mqtt_url, batch_max_delay_ms=20) as w:
        yield Announcing(w)


async def scalar(url: str, sql: str) -> Any:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(text(sql))
    finally:
        await engine.dispose()


@pytest.mark.mosquitto
async def test_two_workers_register_the_same_new_devices_once(
    db_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    """Two workers see the first messages of the same 200 new devices at the same moment
    (a shared subscription splits a device's messages over workers): each device is
    created once, recorded once and announced once, by one of them."""
    devices = [f"TWIN{i:04d}" for i in range(200)]
    async with (
        worker(tmp_path / "a", db_url, mqtt_url) as a,
        worker(tmp_path / "b", db_url, mqtt_url) as b,
    ):
        pending = [a.data(d, 1) for d in devices] + [b.data(d, 2) for d in reversed(devices)]
        await asyncio.wait_for(asyncio.gather(*(f for f in pending if f is not None)), 60)
        await a.ingestor.drain()
        await b.ingestor.drain()

        registered = a.announced("device_registered") + b.announced("device_registered")
        assert registered == Counter(devices)  # every device, exactly once overall
        assert await scalar(db_url, "SELECT count(*) FROM devices") == len(devices)
        events = "SELECT count(*) FROM device_events WHERE type = 'registered'"
        assert await scalar(db_url, events) == len(devices)
        assert await scalar(db_url, "SELECT count(*) FROM telemetry") == 2 * len(devices)
        # Both know every device now (the loser of a race too): nothing registers again.
        assert a.ingestor.known >= set(devices)
        assert b.ingestor.known >= set(devices)


@pytest.mark.mosquitto
async def test_a_rolled_back_group_announces_nothing_twice(
    db_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    """A grouped transaction fails because of one job: the group rolls back and each job
    runs again on its own. What the group had done before failing is announced once,
    after the replay commits, not once per attempt."""
    attempts = 0
    registered_in_group: Any = None

    async def flaky(session: AsyncSession) -> list[Event]:
        nonlocal attempts, registered_in_group
        attempts += 1
        if attempts == 1:
            # The group's registrations, written in this same transaction.
            count = "SELECT count(*) FROM devices WHERE id LIKE 'GROUP%'"
            registered_in_group = await session.scalar(text(count))
            raise RuntimeError("conflict")  # like a serialization failure
        return [("device_event", "GROUP1", {"event": "ok"}, 1.0)]

    async with worker(tmp_path, db_url, mqtt_url) as w:
        # The registrations and the flaky job are queued before the writer next runs
        # (nothing awaits in between once the registrations have queued): one group.
        pending = [w.data(f"GROUP{i}", 1) for i in range(1, 4)]
        await asyncio.sleep(0)  # each new device's handler queues its registration
        flaky_done = w.ingestor.submit(flaky)
        await asyncio.wait_for(asyncio.gather(flaky_done, *(f for f in pending if f)), 30)
        await w.ingestor.drain()

        assert registered_in_group == 3  # the flaky job ran in the registrations' group
        assert attempts == 2  # the group failed once, the job alone then went through
        assert w.announced("device_registered") == Counter(["GROUP1", "GROUP2", "GROUP3"])
        assert w.announced("device_event") == Counter(["GROUP1"])
        online = [
            d for t, d, p, _ in w.published if t == "device_status" and p["status"] == "online"
        ]
        assert sorted(online) == ["GROUP1", "GROUP2", "GROUP3"]
        events = "SELECT count(*) FROM device_events WHERE type = 'registered'"
        assert await scalar(db_url, events) == 3


async def test_registering_a_thousand_new_devices_is_one_bulk_insert(db_url: str) -> None:
    """1,000 devices seen for the first time at once: a few bulk statements, not thousands
    of per-device round trips (the time is printed, not asserted)."""
    engine = make_engine(db_url)
    new = [device_service.NewDevice(f"BULK{i:05d}", 1000.0 + i) for i in range(1000)]
    try:
        started = time.perf_counter()
        async with AsyncSession(engine) as session, session.begin():
            created = await device_service.register_many(session, new)
        bulk = time.perf_counter() - started
        assert [r.device_id for r in created] == [n.device_id for n in new]
        assert created[0].name == "ESP32-K00000"
        async with AsyncSession(engine) as session, session.begin():
            assert await device_service.register_many(session, new[:10]) == []  # all exist

        started = time.perf_counter()
        async with AsyncSession(engine) as session, session.begin():
            for i in range(1000):
                await device_service.register(session, device_id=f"ONE{i:05d}", now=1.0)
        one_by_one = time.perf_counter() - started
        print(
            f"\n{engine.dialect.name}: 1,000 new devices bulk {bulk * 1000:.0f} ms, "
            f"one by one {one_by_one * 1000:.0f} ms"
        )
    finally:
        await engine.dispose()
    assert await scalar(db_url, "SELECT count(*) FROM devices") == 2000
    events = "SELECT count(*) FROM device_events WHERE type = 'registered'"
    assert await scalar(db_url, events) == 2000

"""The PostgreSQL pool's liveness check: a connection that sat idle is pinged before use,
one used a moment ago is not (that ping costs three round trips on asyncpg)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from iotp.db import engine as db_engine
from iotp.db.models import CommandRow, Device
from iotp.protocol.events import CommandStatus
from iotp.protocol.payloads import Ack
from iotp.services import commands
from iotp.settings import Settings
from iotp.worker.control import ControlPlane
from tests.support import pg_database

pytestmark = pytest.mark.postgres
DEVICE = "ESP32-AAAAAA"


def _asyncpg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


async def _backend_pid(engine: db_engine.AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _kill(url: str, pid: int) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def test_an_idle_connection_the_server_closed_is_replaced_before_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with pg_database() as url:
        engine = db_engine.make_engine(_asyncpg(url), pool_size=1, max_overflow=0)
        try:
            pid = await _backend_pid(engine)
            await _kill(url, pid)  # the database restarted, say, while the pool slept
            monkeypatch.setattr(db_engine, "IDLE_PING_SECONDS", 0.0)
            # The ping finds the connection dead; the pool connects anew, nothing fails.
            assert await _backend_pid(engine) != pid
        finally:
            await engine.dispose()


async def test_a_connection_used_a_moment_ago_is_used_without_a_ping() -> None:
    async with pg_database() as url:
        engine = db_engine.make_engine(_asyncpg(url), pool_size=1, max_overflow=0)
        try:
            pid = await _backend_pid(engine)
            await _kill(url, pid)
            # No ping: the one transaction on the dead connection fails and discards it...
            with pytest.raises(DBAPIError) as failed:
                await _backend_pid(engine)
            assert failed.value.connection_invalidated
            # ...and the next one connects anew.
            assert await _backend_pid(engine) != pid
        finally:
            await engine.dispose()


async def test_an_ack_is_recorded_when_the_database_restarted_since_the_last_one(
    tmp_path: Path,
) -> None:
    """A device's ack is not lost to a pooled connection that died: the worker records
    it again on a new connection."""
    async with pg_database(migrated=True) as url:
        engine = db_engine.make_engine(_asyncpg(url), pool_size=1, max_overflow=0)
        sessions = db_engine.make_sessionmaker(engine)
        events: list[dict[str, Any]] = []
        control = ControlPlane(
            settings=Settings(data_dir=tmp_path, database_url=url),
            sessions=sessions,
            publish_event=lambda _type, _device, command, _ts: events.append(command),
            publish_confirmed=_never_published,
        )
        try:
            async with sessions() as session:
                session.add(
                    Device(
                        id=DEVICE,
                        name=DEVICE,
                        capabilities=["relay:light"],
                        status="online",
                        first_seen=0.0,
                    )
                )
                await session.flush()
                row = await commands.issue(
                    session,
                    device=DEVICE,
                    command="relay",
                    params={"name": "light", "state": "on"},
                    claim_if_online="api:1",
                    source="api",
                    publish_event=lambda *_: None,
                )
                await session.commit()
            await _kill(url, await _backend_pid(engine))  # the database restarted
            await control.on_ack(DEVICE, Ack(id=row.id, status="ok"), time.time())
            assert control.counters["acks_failed_to_record"] == 0
            async with sessions() as session:
                stored = await session.get(CommandRow, row.id)
                assert stored is not None
                assert stored.status == CommandStatus.ACKED
            assert events[-1]["status"] == "acked"
        finally:
            await engine.dispose()


async def _never_published(_topic: str, _payload: bytes) -> None:
    raise AssertionError("nothing is published here")

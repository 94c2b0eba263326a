"""The PostgreSQL pool's liveness check: a connection that sat idle is pinged before use,
one used a moment ago is not (that ping costs three round trips on asyncpg)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from iotp.db import engine as db_engine
from tests.support import pg_database

pytestmark = pytest.mark.postgres


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

"""Sign-in throttling in the database (shared by every API replica), on SQLite and
PostgreSQL: the sliding window, per address and per username, reset on success."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from iotp.db import migrate
from iotp.db.auth_models import LoginFailure
from iotp.db.engine import make_engine
from iotp.services.auth import LoginThrottle
from tests.support import create_pg_database, drop_pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
        await migrate.upgrade(eng)
        yield eng
        await eng.dispose()
    else:
        url = await create_pg_database()
        eng = make_engine(url.replace("postgresql://", "postgresql+asyncpg://"))
        await migrate.upgrade(eng)
        yield eng
        await eng.dispose()
        await drop_pg_database(url)


async def test_login_throttle_window(engine: AsyncEngine) -> None:
    keys = ["ip:1.2.3.4", "user:admin"]
    # Two throttles on one database: two API replicas.
    a, b = LoginThrottle(3, 60), LoginThrottle(3, 60)
    async with AsyncSession(engine) as s:
        for i, t in enumerate((a, b, a)):
            assert await t.retry_after(s, keys, now=100 + i) == 0
            await t.failed(s, keys, now=100 + i)
            await s.commit()
        assert await b.retry_after(s, keys, now=103) == pytest.approx(57)
        assert await a.retry_after(s, ["user:admin"], now=103) == pytest.approx(57)
        assert await a.retry_after(s, ["ip:5.6.7.8", "user:bob"], now=103) == 0
        assert await b.retry_after(s, keys, now=161) == 0  # the window moved on
        await a.failed(s, keys, now=170)  # and the expired rows are deleted
        await s.commit()
        assert await s.scalar(select(func.count()).select_from(LoginFailure)) == 2
        stored = set((await s.scalars(select(LoginFailure.key))).all())
        assert not any("admin" in k or "1.2.3.4" in k for k in stored)  # digests only
        await b.succeeded(s, ["user:admin"])
        await s.commit()
        assert await a.retry_after(s, ["user:admin"], now=171) == 0
        assert await s.scalar(select(func.count()).select_from(LoginFailure)) == 1

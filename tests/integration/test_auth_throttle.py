"""Sign-in throttling in the database (shared by every API replica), on SQLite and
PostgreSQL: the sliding window per (user, address) and per address, the per-user delay,
a success removing its own attempt."""

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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
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
    # Two throttles on one database: two API replicas.
    a = LoginThrottle(3, 60, address_max_failures=5, max_delay=2)
    b = LoginThrottle(3, 60, address_max_failures=5, max_delay=2)
    async with AsyncSession(engine) as s:
        for i, t in enumerate((a, b, a)):
            attempt = await t.attempt(s, "1.2.3.4", "admin", now=100 + i)
            assert (attempt.retry_after, attempt.delay) == (0, 0)
            await s.commit()
        # The pair is refused on either replica until its oldest failure leaves the window.
        assert (await b.attempt(s, "1.2.3.4", "admin", now=103)).retry_after == pytest.approx(57)
        assert await a.retry_after(s, "1.2.3.4", "admin", now=103) == pytest.approx(57)
        # Another address may still try the user, slowed down; nothing is refused.
        other = await a.attempt(s, "5.6.7.8", "admin", now=103)
        assert (other.retry_after, other.delay) == (0, 0.25)
        await a.succeeded(s, other)  # a success removes its own rows only
        await s.commit()
        assert (await b.attempt(s, "5.6.7.9", "admin", now=104)).delay == 0.25
        await s.commit()
        # The address is refused for every user past its own limit.
        assert (await b.attempt(s, "1.2.3.4", "bob", now=105)).retry_after == 0
        await s.commit()
        assert (await b.attempt(s, "1.2.3.4", "carol", now=106)).retry_after == 0
        await s.commit()
        assert (await a.attempt(s, "1.2.3.4", "dave", now=107)).retry_after == pytest.approx(53)
        assert await b.retry_after(s, "1.2.3.4", "admin", now=161) == 0  # the window moved on
        await a.attempt(s, "9.9.9.9", "erin", now=170)  # and the expired rows are deleted
        await s.commit()
        stored = set((await s.scalars(select(LoginFailure.key))).all())
        assert not any("admin" in k or "1.2.3.4" in k for k in stored)  # digests only
        assert await s.scalar(select(func.count()).select_from(LoginFailure)) == 3

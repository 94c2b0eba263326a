"""Every migration, up and down, on SQLite and PostgreSQL; and the models match them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from iotp.db import migrate
from iotp.db.engine import make_engine
from iotp.db.models import Base
from tests.support import create_pg_database, drop_pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
        yield eng
        await eng.dispose()
    else:
        url = await create_pg_database()
        eng = make_engine(url.replace("postgresql://", "postgresql+asyncpg://"))
        yield eng
        await eng.dispose()
        await drop_pg_database(url)


def _diff(conn: Connection) -> list[object]:
    ctx = MigrationContext.configure(conn)
    return list(compare_metadata(ctx, Base.metadata))


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names()) - {"alembic_version"}


async def test_upgrade_downgrade_upgrade_and_models_match(engine: AsyncEngine) -> None:
    await migrate.upgrade(engine)
    assert await migrate.current_revision(engine) == migrate.head_revision()
    async with engine.connect() as conn:
        tables = await conn.run_sync(_tables)
        assert {"devices", "telemetry", "device_events", "component_stats"} <= tables
        diff = await conn.run_sync(_diff)
    assert diff == [], f"models and migrations differ: {diff}"

    await migrate.downgrade(engine, "base")
    async with engine.connect() as conn:
        assert await conn.run_sync(_tables) == set()

    await migrate.upgrade(engine)
    await migrate.upgrade(engine)  # idempotent
    assert await migrate.current_revision(engine) == migrate.head_revision()

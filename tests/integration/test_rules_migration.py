"""Migration 0004 (automations): upgrade, downgrade, upgrade again, on SQLite and
PostgreSQL, and the schema it creates matches the ORM tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from iotp.db import automation_models, migrate
from iotp.db.engine import make_engine
from iotp.db.models import Base
from tests.support import create_pg_database, drop_pg_database

TABLES = {"rules", "alerts", "webhooks", "webhook_deliveries"}


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _diff(conn: Connection) -> list[object]:
    ctx = MigrationContext.configure(conn)
    mine = {t.name for t in automation_models.Base.metadata.sorted_tables} & TABLES
    return [d for d in compare_metadata(ctx, Base.metadata) if any(t in str(d) for t in mine)]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_upgrade_downgrade(kind: str, tmp_path: Path) -> None:
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
        if kind == "sqlite"
        else await create_pg_database()
    )
    if url.startswith("postgresql://"):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    engine = make_engine(url)
    try:
        await migrate.upgrade(engine, "0004")
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) >= TABLES
            assert await conn.run_sync(_diff) == []
        await migrate.downgrade(engine, "0003")
        async with engine.connect() as conn:
            assert not TABLES & await conn.run_sync(_tables)
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) >= TABLES
    finally:
        await engine.dispose()
        if kind == "postgres":
            await drop_pg_database(url.replace("postgresql+asyncpg://", "postgresql://"))

"""The services layer against a real database, without broker, worker or API: an empty
migrated database per test, on SQLite and on PostgreSQL (marked ``postgres``).

The schema is migrated once per run: each SQLite test gets a copy of the migrated file,
and the PostgreSQL tests share one migrated database whose tables are emptied before
each test (creating a database per test costs seconds)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotp.db import migrate
from iotp.db.engine import make_engine, make_sessionmaker
from tests.support import DATABASES, create_pg_database, drop_pg_database


async def _migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


class Templates:
    """The migrated templates, made on first use (a run of SQLite-only tests never
    touches PostgreSQL) and dropped at the end of the run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sqlite: Path | None = None
        self.pg_url: str | None = None

    async def sqlite_file(self) -> Path:
        if self.sqlite is None:
            path = self.folder / "template.db"
            await _migrate(f"sqlite+aiosqlite:///{path}")
            self.sqlite = path
        return self.sqlite

    async def pg_empty(self) -> str:
        if self.pg_url is None:
            url = await create_pg_database()
            await _migrate(_asyncpg(url))
            self.pg_url = url
        conn = await asyncpg.connect(self.pg_url, timeout=5)
        try:
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'alembic_version'"
            )
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()
        return self.pg_url


def _asyncpg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    made = Templates(tmp_path_factory.mktemp("services-db"))
    yield made
    if made.pg_url is not None:
        asyncio.run(drop_pg_database(made.pg_url))


@pytest.fixture(params=DATABASES)
async def sessions(
    request: pytest.FixtureRequest, tmp_path: Path, templates: Templates
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on a freshly migrated database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "iotp.db"
        shutil.copyfile(await templates.sqlite_file(), path)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        url = _asyncpg(await templates.pg_empty())
    engine = make_engine(url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One session; the test commits where the code under test expects its caller to."""
    async with sessions() as s:
        yield s

"""The services layer against a real database, without broker, worker or API: a
migrated database per test, on SQLite and on PostgreSQL (marked ``postgres``).

The schema is migrated once per run into a template (a SQLite file, a PostgreSQL
template database) and each test gets a copy, so tests are isolated and cheap."""

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
from tests.support import PG_ADMIN_DSN, create_pg_database, drop_pg_database


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

    async def pg_name(self) -> str:
        if self.pg_url is None:
            url = await create_pg_database()
            await _migrate(_asyncpg(url))
            self.pg_url = url
        return self.pg_url.rsplit("/", 1)[1]


def _asyncpg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    made = Templates(tmp_path_factory.mktemp("services-db"))
    yield made
    if made.pg_url is not None:
        asyncio.run(drop_pg_database(made.pg_url))


async def _pg_copy(template: str) -> str:
    url = await create_pg_database()
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sessions(
    request: pytest.FixtureRequest, tmp_path: Path, templates: Templates
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on a freshly migrated database of each kind."""
    pg_url: str | None = None
    if request.param == "sqlite":
        path = tmp_path / "iotp.db"
        shutil.copyfile(await templates.sqlite_file(), path)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        pg_url = await _pg_copy(await templates.pg_name())
        url = _asyncpg(pg_url)
    engine = make_engine(url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()
        if pg_url is not None:
            await drop_pg_database(pg_url)


@pytest.fixture
async def session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One session; the test commits where the code under test expects its caller to."""
    async with sessions() as s:
        yield s

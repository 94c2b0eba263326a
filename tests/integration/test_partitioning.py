"""Telemetry at scale: migration 0005 up and down on SQLite and PostgreSQL with data,
daily partitions created ahead, rollups equal to the raw aggregates, retention that drops
whole partitions only once they are rolled up, and history queries served by rollups."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from iotp.db import migrate
from iotp.db.engine import make_engine
from iotp.services import devices as device_service
from iotp.services import retention, telemetry
from iotp.settings import Settings
from tests.support import DATABASES, create_pg_database, drop_pg_database

DAY = 86400
BEFORE = "0004"  # the revision before telemetry partitioning


@pytest.fixture(params=DATABASES)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
        yield eng
        await eng.dispose()
        return
    url = await create_pg_database()
    eng = make_engine(Settings(database_url=url).effective_database_url)
    try:
        yield eng
    finally:
        await eng.dispose()
        await drop_pg_database(url)


async def count(engine: AsyncEngine, sql: str = "SELECT count(*) FROM telemetry") -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(sql)) or 0)


async def register(engine: AsyncEngine, *device_ids: str) -> None:
    async with AsyncSession(engine) as session, session.begin():
        for device_id in device_ids:
            await device_service.register(session, device_id=device_id, now=time.time())


def rows_for(device: str, start: float, n: int, step: float = 60.0) -> list[telemetry.Row]:
    return [
        telemetry.make_row(device, start + i * step, i, {"t": float(i % 10), "h": 50.0}, None)
        for i in range(n)
    ]


async def test_upgrade_and_downgrade_keep_data(engine: AsyncEngine) -> None:
    await migrate.upgrade(engine, BEFORE)
    now = time.time()
    await telemetry.insert_rows(engine, rows_for("OLD", now - 20 * DAY, 100))
    await telemetry.insert_rows(engine, rows_for("NEW", now - 3600, 50))
    await migrate.upgrade(engine)
    assert await count(engine) == 150
    async with engine.connect() as conn:
        partitioned = await retention.is_partitioned(conn)
        assert partitioned == (engine.dialect.name == "postgresql")
        if partitioned:
            names = await retention.partitions(conn)
            today = int(now // DAY) * DAY
            for day in range(today, today + 4 * DAY, DAY):
                assert retention.partition_name(day) in names
            assert retention.partition_name(int((now - 20 * DAY) // DAY) * DAY) in names
    # The write path is unchanged: duplicates still ignored through the partitioned key.
    assert await telemetry.insert_rows(engine, rows_for("NEW", now - 3600, 60)) == 10
    await migrate.downgrade(engine, BEFORE)
    assert await count(engine) == 160
    async with engine.connect() as conn:
        assert not await retention.is_partitioned(conn)
    await migrate.upgrade(engine)
    assert await count(engine) == 160


async def test_rollups_retention_and_queries(engine: AsyncEngine) -> None:
    await migrate.upgrade(engine)
    now = time.time()
    settings = Settings(retention_days=5, rollup_minute_retention_days=30)
    old_day = int((now - 10 * DAY) // DAY) * DAY
    postgres = engine.dialect.name == "postgresql"
    if postgres:
        async with engine.begin() as conn:  # as if the platform had run back then
            created = await retention.ensure_partitions(conn, old_day, 1)
        assert created == [
            retention.partition_name(old_day),
            retention.partition_name(old_day + DAY),
        ]
    await register(engine, "D1", "D2")
    old = rows_for("D1", old_day + 3600, 6 * 60)  # 6 hours, one sample a minute
    recent = rows_for("D1", now - 3 * 3600, 3 * 60 - 1)  # up to a minute ago
    await telemetry.insert_rows(engine, old + recent)
    await telemetry.insert_rows(engine, rows_for("D2", now - 1800, 30))

    # Before any rollup: raw aggregates.
    async with engine.connect() as conn:
        raw_recent = await telemetry.query_series(
            conn, device_id="D1", metric="t", since=now - 4 * 3600, until=now, bucket=600
        )
    dropped: list[str] = []
    for _ in range(100):  # the backlog is caught up in bounded rounds
        report = await retention.maintain(engine, settings, now)
        dropped += report.dropped
        if not postgres or (report.rolled_up_to or 0) >= now - retention.LATE_SECONDS - 60:
            break
    if not postgres:
        # SQLite: the simple retention job deleted the old rows, kept the recent ones.
        assert report.deleted_rows == len(old)
        assert await count(engine) == len(recent) + 30
        again = await retention.maintain(engine, settings, now + 60)
        assert again.deleted_rows == 0  # at most once an hour
        return

    # Partitions: old days dropped (rolled up first), today and 3 days ahead exist.
    assert retention.partition_name(old_day) in dropped
    async with engine.connect() as conn:
        names = await retention.partitions(conn)
    assert retention.partition_name(old_day) not in names
    assert await count(engine, f"SELECT count(*) FROM telemetry WHERE ts < {now - 5 * DAY}") == 0
    assert await count(engine) == len(recent) + 30

    # Rollups keep the dropped history, exactly.
    n_old = await count(
        engine,
        "SELECT sum(vcount) FROM telemetry_rollup_1m WHERE device_id = 'D1' AND metric = 't' "
        f"AND bucket < {now - 5 * DAY}",
    )
    assert n_old == len(old)
    hours = await count(
        engine,
        f"SELECT count(*) FROM telemetry_rollup_1h WHERE device_id = 'D1' AND metric = 't' "
        f"AND bucket < {now - 5 * DAY}",
    )
    assert hours == 6

    async with engine.connect() as conn:
        # The old range is answered from the hourly rollups, though raw rows are gone.
        series = await telemetry.query_series(
            conn, device_id="D1", metric="t", since=old_day, until=old_day + DAY, bucket=3600
        )
        assert [p["count"] for p in series] == [60] * 6
        assert all(p["avg"] == pytest.approx(4.5) for p in series)
        assert all(p["min"] == 0.0 and p["max"] == 9.0 for p in series)
        # A range over rollups and the raw tail equals the raw aggregate.
        mixed = await telemetry.query_series(
            conn, device_id="D1", metric="t", since=now - 4 * 3600, until=now, bucket=600
        )
    assert [p["ts"] for p in mixed] == [p["ts"] for p in raw_recent]
    assert [p["count"] for p in mixed] == [p["count"] for p in raw_recent]
    for a, b in zip(mixed, raw_recent, strict=True):
        assert a["avg"] == pytest.approx(b["avg"])
        assert (a["min"], a["max"]) == (b["min"], b["max"])


async def test_rows_in_the_default_partition_move_into_a_new_day(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("partitions are PostgreSQL only")
    await migrate.upgrade(engine)
    far = int((time.time() + 30 * DAY) // DAY) * DAY  # a device clock far ahead
    await register(engine, "FUT")
    await telemetry.insert_rows(engine, rows_for("FUT", far + 10, 5))
    assert await count(engine, f"SELECT count(*) FROM {retention.DEFAULT_PARTITION}") == 5
    async with engine.begin() as conn:
        assert await retention.ensure_partitions(conn, far, 0) == [retention.partition_name(far)]
    assert await count(engine, f"SELECT count(*) FROM {retention.DEFAULT_PARTITION}") == 0
    assert await count(engine, f"SELECT count(*) FROM {retention.partition_name(far)}") == 5


async def test_several_metrics_read_together_equal_the_raw_samples(engine: AsyncEngine) -> None:
    """A chart's metrics come from one query per source (rollups, raw edges); each
    metric's buckets equal those computed from the samples, a sparse metric and
    integer values included, whether the range is answered from rollups or raw rows."""
    await migrate.upgrade(engine)
    now = time.time()
    settings = Settings(retention_days=5, rollup_minute_retention_days=30)
    await register(engine, "MULTI")
    start = now - 5 * 3600
    samples: list[tuple[float, dict[str, float]]] = []
    for i in range(5 * 60 - 1):
        values: dict[str, float] = {"t": float(i % 10), "h": 50.0 + i % 3}
        if i % 7 == 0:
            values["g"] = i  # an integer, and only in some rows
        samples.append((start + i * 60, values))
    await telemetry.insert_rows(
        engine, [telemetry.make_row("MULTI", ts, i, v, None) for i, (ts, v) in enumerate(samples)]
    )
    # rows with no metric at all (attributes only) between them, in buckets of their own
    await telemetry.insert_rows(
        engine,
        [
            telemetry.make_row("MULTI", start + i * 60 + 30, 10_000 + i, {}, {"fw": "x"})
            for i in range(0, 5 * 60 - 1, 2)
        ],
    )
    for _ in range(100):
        report = await retention.maintain(engine, settings, now)
        if engine.dialect.name != "postgresql":
            break
        if (report.rolled_up_to or 0) >= now - retention.LATE_SECONDS - 60:
            break
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            assert await retention.get_state(conn, retention.WATERMARK_1M)  # rollups in use

    def expected(metric: str, since: float, until: float, bucket: float) -> list[dict[str, float]]:
        buckets: dict[float, list[float]] = {}
        for ts, values in samples:
            if since <= ts < until and metric in values:
                buckets.setdefault(float(int(ts // bucket) * bucket), []).append(values[metric])
        return [
            {"ts": b, "avg": sum(v) / len(v), "min": min(v), "max": max(v), "count": len(v)}
            for b, v in sorted(buckets.items())
        ]

    since = start + 90  # not on a bucket boundary: a partial first bucket
    for bucket in (600.0, 3600.0, 45.0):
        async with engine.connect() as conn:
            got = await telemetry.query_buckets(
                conn,
                device_id="MULTI",
                metrics=["t", "h", "g", "absent"],
                since=since,
                until=now,
                bucket=bucket,
            )
        assert got["absent"] == []
        for metric in ("t", "h", "g"):
            want = expected(metric, since, now, bucket)
            assert [p["ts"] for p in got[metric]] == [p["ts"] for p in want], (metric, bucket)
            for a, b in zip(got[metric], want, strict=True):
                assert a["count"] == b["count"]
                assert a["avg"] == pytest.approx(b["avg"])
                assert (a["min"], a["max"]) == (b["min"], b["max"])
        # a limit bounds each metric's buckets
        async with engine.connect() as conn:
            few = await telemetry.query_buckets(
                conn,
                device_id="MULTI",
                metrics=["t", "g"],
                since=since,
                until=now,
                bucket=bucket,
                limit=3,
            )
        assert [p["ts"] for p in few["t"]] == [p["ts"] for p in got["t"][:3]]
        assert len(few["g"]) <= 3
        async with engine.connect() as conn:
            # a sparse metric alone: the limit counts its own buckets, not other rows'
            sparse = await telemetry.query_buckets(
                conn,
                device_id="MULTI",
                metrics=["g"],
                since=since,
                until=now,
                bucket=bucket,
                limit=3,
            )
            assert sparse["g"] == got["g"][:3]
            assert (
                await telemetry.query_buckets(
                    conn, device_id="MULTI", metrics=[], since=since, until=now, bucket=bucket
                )
                == {}
            )

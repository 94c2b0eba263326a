"""Counters shared across processes through the component_stats table."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.models import ComponentStats, IngestCount, StatsSample
from iotp.services import devices as device_service

LIVE_WINDOW_SECONDS = 15.0
# The overview's charts: these windows, at most this many points each.
HISTORY_WINDOWS = {"1h": 3600.0, "24h": 86400.0}
HISTORY_MAX_POINTS = 300
DAY = 86400.0


async def publish(
    session: AsyncSession, *, component_id: str, kind: str, started_at: float, data: dict[str, Any]
) -> None:
    now = time.time()
    values = {
        "component_id": component_id,
        "kind": kind,
        "started_at": started_at,
        "updated_at": now,
        "data": data,
    }
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = pg_insert(ComponentStats).values(**values)
    else:
        stmt = sqlite_insert(ComponentStats).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["component_id"],
        set_={"kind": kind, "started_at": started_at, "updated_at": now, "data": data},
    )
    await session.execute(stmt)


async def load(session: AsyncSession) -> list[ComponentStats]:
    return list((await session.scalars(select(ComponentStats))).all())


async def fleet(session: AsyncSession, now: float) -> dict[str, Any]:
    """The fleet's counters: stored and duplicate rows from ingest_counts (committed with
    the rows), the rest from the components' published stats."""
    counts = (await session.scalars(select(IngestCount))).all()
    return aggregate(await load(session), now, counts)


def aggregate(
    rows: list[ComponentStats], now: float, counts: Sequence[IngestCount]
) -> dict[str, Any]:
    """Counters are totals over every component ever run (they persist per component
    id); rates and connection counts only from components alive right now."""
    stored = sum(c.stored for c in counts)
    duplicates = sum(c.duplicates for c in counts)
    received = rejected = 0
    by_reason: dict[str, int] = {}
    rate = 0.0
    ws_clients = 0
    workers_live = apis_live = 0
    for row in rows:
        data = row.data or {}
        live = now - row.updated_at <= LIVE_WINDOW_SECONDS
        if row.kind == "worker":
            received += int(data.get("received", 0))
            for reason, n in (data.get("rejected") or {}).items():
                by_reason[reason] = by_reason.get(reason, 0) + int(n)
            if live:
                workers_live += 1
                rate += float(data.get("rate", 0.0))
        elif row.kind == "api" and live:
            apis_live += 1
            ws_clients += int(data.get("ws_clients", 0))
    rejected = sum(by_reason.values())
    return {
        "messages_received": received,
        "messages_stored": stored,
        "messages_duplicate": duplicates,
        "messages_rejected": rejected,
        "rejected_by_reason": by_reason,
        "ingest_rate": round(rate, 1),
        "websocket_clients": ws_clients,
        "workers": workers_live,
        "api_instances": apis_live,
    }


# ---- history (the overview's charts) ----------------------------------------------------


async def record_sample(session: AsyncSession, *, now: float, keep_days: float) -> None:
    """One sample of the fleet's figures; samples older than ``keep_days`` go."""
    by_status = await device_service.count_by_status(session)
    stored = await session.scalar(select(func.coalesce(func.sum(IngestCount.stored), 0)))
    # merge: a round run again at the same instant replaces its sample (ts is the key).
    await session.merge(
        StatsSample(
            ts=now,
            devices_total=sum(by_status.values()),
            devices_online=by_status.get("online", 0),
            messages_stored=int(stored or 0),
        )
    )
    await session.execute(delete(StatsSample).where(StatsSample.ts < now - keep_days * DAY))


async def history(session: AsyncSession, *, window: float, now: float) -> list[dict[str, Any]]:
    """Devices online and messages stored per second over the last ``window`` seconds,
    at most HISTORY_MAX_POINTS samples evenly spread; a sample's rate is over the time
    since the sample before it (None for the first, or across a counter reset)."""
    since = now - window
    step = window / HISTORY_MAX_POINTS
    rows = (
        await session.scalars(
            select(StatsSample).where(StatsSample.ts >= since - step).order_by(StatsSample.ts)
        )
    ).all()
    picked: list[StatsSample] = []
    for row in rows:
        if not picked or row.ts - picked[-1].ts >= step:
            picked.append(row)
    points: list[dict[str, Any]] = []
    prev: StatsSample | None = None
    for row in picked:
        rate = None
        if prev is not None and row.messages_stored >= prev.messages_stored:
            rate = round((row.messages_stored - prev.messages_stored) / (row.ts - prev.ts), 2)
        if row.ts >= since:
            points.append(
                {
                    "ts": row.ts,
                    "devices_total": row.devices_total,
                    "devices_online": row.devices_online,
                    "messages_per_second": rate,
                }
            )
        prev = row
    return points

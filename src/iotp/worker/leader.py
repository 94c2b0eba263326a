"""One leader among several workers: it owns device presence and the storage maintenance.

With shared subscriptions (``$share/<group>/devices/#``) the broker hands each message
to ONE worker of the group, so every worker sees only part of each device's messages
and its own last-seen clock lies: left alone, each worker would time devices out while
their messages went to another worker, and flap them offline/online.

The fix: exactly one worker, the leader, records presence transitions (and runs
retention, rollups and partition upkeep). Leadership is a PostgreSQL session advisory
lock, so it moves by itself when the leader dies (its connection closes). The leader

- subscribes, without sharing, to ``devices/+/status`` and ``devices/+/info`` (retained,
  low volume): it sees every birth, last will and report interval;
- learns about data handled by the other workers from ``devices.last_seen``, which every
  worker already flushes every ``LAST_SEEN_FLUSH_SECONDS``: before timing a device out
  it re-reads that device's ``last_seen``, and it revives offline devices whose
  ``last_seen`` moved past their ``status_changed_at``.

Other workers still register devices and write last_seen, but record no transitions.
A single worker (no share group) and SQLite need no election: that worker leads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from iotp.db.models import Device
from iotp.protocol.events import Presence
from iotp.worker.presence import PresenceTracker, Transition

log = logging.getLogger(__name__)

LEADER_LOCK = 7_140_214  # any fixed number (iotp.db.migrate uses 7_140_213)
LEADER_CHECK_SECONDS = 2.0


class Leadership:
    """Runs until cancelled; calls ``on_change(True/False)`` when leadership moves."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        elect: bool,
        on_change: Callable[[bool], Awaitable[None]],
        check_seconds: float = LEADER_CHECK_SECONDS,
    ) -> None:
        self.engine = engine
        self.elect = elect and engine.dialect.name == "postgresql"
        self.on_change = on_change
        self.check_seconds = check_seconds
        self.is_leader = False

    async def _set(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            log.info("this worker %s the leader", "is now" if leader else "is no longer")
            await self.on_change(leader)

    async def run(self) -> None:
        if not self.elect:
            await self._set(True)
            return
        while True:
            try:
                async with self.engine.connect() as conn:
                    await self._hold(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database may be away: retry
                log.warning("leader election: %s: %s", type(exc).__name__, exc)
            await self._set(False)
            await asyncio.sleep(self.check_seconds)

    async def _hold(self, conn: AsyncConnection) -> None:
        """Try for the lock; once held, keep checking that its connection is alive."""
        while True:
            if not self.is_leader:
                got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK})
                await conn.commit()
                if got:
                    await self._set(True)
            else:
                await conn.execute(text("SELECT 1"))
                await conn.commit()
            await asyncio.sleep(self.check_seconds)


async def refresh_from_database(
    sessions: async_sessionmaker[AsyncSession],
    tracker: PresenceTracker,
    now: float,
) -> list[Transition]:
    """Bring the leader's clocks up to date with what other workers saw (their
    ``last_seen`` writes). Returns the revivals (offline -> online) it found."""
    due = [
        device_id
        for device_id, dev in tracker.devices.items()
        if dev.status is Presence.ONLINE and now - dev.last_seen > tracker.timeout_for(dev)
    ]
    out: list[Transition] = []
    async with sessions() as session:
        if due:
            rows = await session.execute(
                select(Device.id, Device.last_seen).where(Device.id.in_(due[:5000]))
            )
            for device_id, last_seen in rows:
                dev = tracker.devices.get(device_id)
                if dev is not None and last_seen is not None and last_seen > dev.last_seen:
                    dev.last_seen = last_seen
        rows = await session.execute(
            select(Device.id, Device.last_seen).where(
                Device.status != Presence.ONLINE.value,
                Device.last_seen.is_not(None),
                or_(
                    Device.status_changed_at.is_(None),
                    Device.last_seen > Device.status_changed_at,
                ),
            )
        )
        for device_id, last_seen in rows:
            dev = tracker.devices.get(device_id)
            if last_seen is None:
                continue
            if dev is not None and (dev.status is Presence.ONLINE or last_seen <= dev.last_seen):
                continue
            transition = tracker.seen(device_id, last_seen)
            if transition is not None:
                out.append(transition)
    return out

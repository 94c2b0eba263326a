"""The pairing window: while it is open, devices that provision with the fleet secret
are approved at once (as Zigbee2MQTT's "permit join"); otherwise they wait for an
admin. Kept in the database, so every provisioner (one beside each worker) sees it."""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.models import StorageState
from iotp.errors import InvalidRequestError

PAIRING_KEY = "pairing_open_until"
MAX_PAIRING_MINUTES = 24 * 60


async def open_until(session: AsyncSession, now: float | None = None) -> float | None:
    """When the open window closes (epoch seconds), or None if it is closed."""
    row = await session.get(StorageState, PAIRING_KEY)
    now = time.time() if now is None else now
    if row is None or row.value <= now:
        return None
    return row.value


async def open_window(session: AsyncSession, *, minutes: float, now: float | None = None) -> float:
    if not 0 < minutes <= MAX_PAIRING_MINUTES:
        raise InvalidRequestError(f"minutes must be in (0, {MAX_PAIRING_MINUTES}]")
    until = (time.time() if now is None else now) + minutes * 60
    await _store(session, until)
    return until


async def close_window(session: AsyncSession) -> None:
    await _store(session, 0.0)


async def _store(session: AsyncSession, until: float) -> None:
    row = await session.get(StorageState, PAIRING_KEY)
    if row is None:
        session.add(StorageState(name=PAIRING_KEY, value=until))
    else:
        row.value = until
    await session.flush()

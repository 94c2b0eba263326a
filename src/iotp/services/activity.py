"""Recent activity for the overview: device events (registrations, presence, events the
devices report), commands and alerts, newest first. A command or an alert is one entry
in its current state (not one per step), keyed so live updates replace it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.automation_models import AlertRow
from iotp.db.models import CommandRow, DeviceEventRow
from iotp.services import alerts as alert_service
from iotp.services import commands as command_service
from iotp.services.times import iso_time


async def recent(session: AsyncSession, *, limit: int) -> list[dict[str, Any]]:
    events = (
        await session.scalars(
            select(DeviceEventRow).order_by(DeviceEventRow.ts.desc()).limit(limit)
        )
    ).all()
    # A command's or an alert's latest change orders it.
    command_ts = func.coalesce(CommandRow.finished_at, CommandRow.sent_at, CommandRow.created_at)
    commands = (
        await session.scalars(select(CommandRow).order_by(command_ts.desc()).limit(limit))
    ).all()
    alert_ts = func.coalesce(AlertRow.cleared_at, AlertRow.acknowledged_at, AlertRow.raised_at)
    alerts = (await session.scalars(select(AlertRow).order_by(alert_ts.desc()).limit(limit))).all()
    items = [
        (e.ts, _item(f"event:{e.id}", e.type, e.ts, e.device_id, e.data or {})) for e in events
    ]
    for c in commands:
        ts = c.finished_at or c.sent_at or c.created_at
        data = command_service.to_dict(c)
        items.append((ts, _item(f"command:{c.id}", "command", ts, c.device_id, data)))
    for a in alerts:
        ts = a.cleared_at or a.acknowledged_at or a.raised_at
        data = alert_service.to_dict(a)
        items.append((ts, _item(f"alert:{a.id}", "alert", ts, a.device_id, data)))
    items.sort(key=lambda pair: pair[0], reverse=True)
    return [item for _, item in items[:limit]]


def _item(
    key: str, type_: str, ts: float, device_id: str | None, data: dict[str, Any]
) -> dict[str, Any]:
    return {"key": key, "type": type_, "ts": iso_time(ts), "device_id": device_id, "data": data}

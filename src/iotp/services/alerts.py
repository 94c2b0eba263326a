"""Alerts: an explicit lifecycle with checked transitions, one open alert per key.

    active -> acknowledged -> cleared
    active -> cleared

Cleared alerts stay as history. Every transition is appended to the alert's ``history``
and published as an ``alert`` event (by the caller, after commit)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.automation_models import AlertRow
from iotp.errors import ConflictError, NotFoundError
from iotp.services.times import iso_time, with_iso_ts

MAX_HISTORY = 50


class AlertConflict(ConflictError):
    """The alert's current state forbids the change."""


class AlertStatus(StrEnum):
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


OPEN = (AlertStatus.ACTIVE.value, AlertStatus.ACKNOWLEDGED.value)
TRANSITIONS: dict[str, frozenset[str]] = {
    AlertStatus.ACTIVE: frozenset({AlertStatus.ACKNOWLEDGED, AlertStatus.CLEARED}),
    AlertStatus.ACKNOWLEDGED: frozenset({AlertStatus.CLEARED}),
    AlertStatus.CLEARED: frozenset(),
}


def check_transition(old: str, new: str) -> None:
    if new not in TRANSITIONS.get(old, frozenset()):
        raise AlertConflict(f"an {old} alert cannot become {new}")


def rule_key(rule_id: int, device_id: str | None) -> str:
    return f"rule:{rule_id}:{device_id or '-'}"


def to_dict(row: AlertRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "key": row.key,
        "rule_id": row.rule_id,
        "device_id": row.device_id,
        "name": row.name,
        "severity": row.severity,
        "status": row.status,
        "message": row.message,
        "data": row.data or {},
        "raised_at": iso_time(row.raised_at),
        "acknowledged_at": iso_time(row.acknowledged_at),
        "acknowledged_by": row.acknowledged_by,
        "cleared_at": iso_time(row.cleared_at),
        "cleared_by": row.cleared_by,
        "history": with_iso_ts(row.history),
    }


def _note(row: AlertRow, status: str, now: float, by: str | None, note: str = "") -> None:
    entry: dict[str, Any] = {"status": status, "ts": now}
    if by:
        entry["by"] = by
    if note:
        entry["note"] = note[:500]
    row.history = [*(row.history or []), entry][-MAX_HISTORY:]


async def open_alert(session: AsyncSession, key: str) -> AlertRow | None:
    result = await session.scalars(
        select(AlertRow)
        .where(AlertRow.key == key, AlertRow.status.in_(OPEN))
        .order_by(AlertRow.id.desc())
        .limit(1)
    )
    return result.first()


async def raise_alert(
    session: AsyncSession,
    *,
    key: str,
    name: str,
    severity: str,
    message: str,
    rule_id: int | None = None,
    device_id: str | None = None,
    data: dict[str, Any] | None = None,
    now: float | None = None,
) -> tuple[AlertRow, bool]:
    """(alert, created). An open alert with the same key is kept (its count goes up)."""
    now = time.time() if now is None else now
    existing = await open_alert(session, key)
    if existing is not None:
        existing.data = {
            **(existing.data or {}),
            "repeats": (existing.data or {}).get("repeats", 0) + 1,
        }
        return existing, False
    row = AlertRow(
        key=key,
        rule_id=rule_id,
        device_id=device_id,
        name=name[:128],
        severity=severity,
        status=AlertStatus.ACTIVE.value,
        message=message[:2000],
        data=dict(data or {}),
        raised_at=now,
        history=[],
    )
    _note(row, AlertStatus.ACTIVE, now, None, "raised")
    session.add(row)
    await session.flush()
    return row, True


async def clear_key(
    session: AsyncSession, *, key: str, by: str, now: float | None = None, note: str = ""
) -> AlertRow | None:
    """Clear the open alert with this key (auto-clear); None if there is none."""
    row = await open_alert(session, key)
    if row is None:
        return None
    _clear(row, by, time.time() if now is None else now, note)
    return row


def _clear(row: AlertRow, by: str, now: float, note: str) -> None:
    check_transition(row.status, AlertStatus.CLEARED)
    row.status = AlertStatus.CLEARED.value
    row.cleared_at = now
    row.cleared_by = by
    _note(row, AlertStatus.CLEARED, now, by, note)


async def get(session: AsyncSession, alert_id: int) -> AlertRow:
    row = await session.get(AlertRow, alert_id)
    if row is None:
        raise NotFoundError("alert", str(alert_id))
    return row


async def acknowledge(
    session: AsyncSession, *, alert_id: int, by: str, note: str = "", now: float | None = None
) -> AlertRow:
    row = await get(session, alert_id)
    check_transition(row.status, AlertStatus.ACKNOWLEDGED)
    now = time.time() if now is None else now
    row.status = AlertStatus.ACKNOWLEDGED.value
    row.acknowledged_at = now
    row.acknowledged_by = by
    _note(row, AlertStatus.ACKNOWLEDGED, now, by, note)
    await session.flush()
    return row


async def clear(
    session: AsyncSession, *, alert_id: int, by: str, note: str = "", now: float | None = None
) -> AlertRow:
    row = await get(session, alert_id)
    _clear(row, by, time.time() if now is None else now, note)
    await session.flush()
    return row


async def list_alerts(
    session: AsyncSession,
    *,
    status: Sequence[str] = (),
    severity: Sequence[str] = (),
    device_id: str | None = None,
    rule_id: int | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[AlertRow], int]:
    conditions: list[Any] = []
    if status:
        conditions.append(AlertRow.status.in_(list(status)))
    if severity:
        conditions.append(AlertRow.severity.in_(list(severity)))
    if device_id:
        conditions.append(AlertRow.device_id == device_id)
    if rule_id is not None:
        conditions.append(AlertRow.rule_id == rule_id)
    if since is not None:
        conditions.append(AlertRow.raised_at >= since)
    if until is not None:
        conditions.append(AlertRow.raised_at <= until)
    rows = await session.scalars(
        select(AlertRow)
        .where(*conditions)
        .order_by(AlertRow.raised_at.desc(), AlertRow.id.desc())
        .limit(limit)
        .offset(offset)
    )
    total = await session.scalar(select(func.count()).select_from(AlertRow).where(*conditions))
    return list(rows.all()), int(total or 0)


async def open_rule_alerts(session: AsyncSession) -> list[tuple[int, str]]:
    """(rule id, device id) of open rule alerts, to restore engine state after a restart."""
    rows = await session.execute(
        select(AlertRow.rule_id, AlertRow.device_id).where(
            AlertRow.status.in_(OPEN),
            AlertRow.rule_id.is_not(None),
            AlertRow.device_id.is_not(None),
        )
    )
    return [(int(r), str(d)) for r, d in rows.all() if r is not None]


async def counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(AlertRow.status, func.count())
        .where(AlertRow.status.in_(OPEN))
        .group_by(AlertRow.status)
    )
    return {str(s): int(n) for s, n in rows.all()}


async def active_by_severity(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(AlertRow.severity, func.count())
        .where(AlertRow.status == AlertStatus.ACTIVE)
        .group_by(AlertRow.severity)
    )
    return {str(s): int(n) for s, n in rows.all()}

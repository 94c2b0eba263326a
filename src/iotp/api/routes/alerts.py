"""Alerts: list with filters, acknowledge (who and when), clear; history is kept."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from iotp.api.deps import SessionDep, StateDep
from iotp.api.security import CurrentPrincipal
from iotp.api.state import ApiState
from iotp.db.automation_models import AlertRow
from iotp.protocol.events import EventType
from iotp.services import alerts as alert_service
from iotp.services import webhooks as webhook_service

router = APIRouter(prefix="/api/alerts", tags=["alerts"])

# ---- schemas -----------------------------------------------------------------------------

Severity = Literal["info", "warning", "critical"]
Status = Literal["active", "acknowledged", "cleared"]


class AlertPublic(BaseModel):
    id: int
    rule_id: int | None
    device_id: str | None
    name: str
    severity: str
    status: str
    message: str
    data: dict[str, Any]
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    cleared_by: str | None
    history: list[dict[str, Any]]

    @classmethod
    def of(cls, row: AlertRow) -> AlertPublic:
        d = alert_service.to_dict(row)
        d.pop("key")
        return cls.model_validate(d)


class AlertsPublic(BaseModel):
    data: list[AlertPublic]
    count: int
    open: dict[str, int] = Field(description="open alerts by status")
    active_by_severity: dict[str, int] = Field(
        default_factory=dict, description="active (unacknowledged) alerts by severity"
    )


class AlertNote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=500)


# ---- routes ------------------------------------------------------------------------------


@router.get("", response_model=AlertsPublic)
async def list_alerts(
    session: SessionDep,
    status_: Annotated[list[Status] | None, Query(alias="status")] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    device_id: Annotated[str | None, Query(max_length=64)] = None,
    rule_id: int | None = None,
    since: Annotated[float | None, Query(description="raised at or after (epoch s)")] = None,
    until: Annotated[float | None, Query(description="raised at or before (epoch s)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AlertsPublic:
    rows, total = await alert_service.list_alerts(
        session,
        status=status_ or (),
        severity=severity or (),
        device_id=device_id,
        rule_id=rule_id,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    return AlertsPublic(
        data=[AlertPublic.of(r) for r in rows],
        count=total,
        open=await alert_service.counts(session),
        active_by_severity=await alert_service.active_by_severity(session),
    )


@router.get("/{alert_id}", response_model=AlertPublic)
async def get_alert(session: SessionDep, alert_id: int) -> AlertPublic:
    return AlertPublic.of(await alert_service.get(session, alert_id))


async def _changed(state: ApiState, session: SessionDep, row: AlertRow, action: str) -> None:
    data = alert_service.to_dict(row)
    payload = {"action": action, **data}
    await webhook_service.enqueue(
        session,
        event_type="alert",
        device_id=row.device_id,
        payload=payload,
        ts=time.time(),
    )
    await session.commit()
    state.publish_event(EventType.ALERT, row.device_id or "-", payload)


@router.post("/{alert_id}/acknowledge", response_model=AlertPublic)
async def acknowledge(
    state: StateDep,
    session: SessionDep,
    principal: CurrentPrincipal,
    alert_id: int,
    body: AlertNote | None = None,
) -> AlertPublic:
    """active -> acknowledged, recording who did it."""
    row = await alert_service.acknowledge(
        session, alert_id=alert_id, by=principal.name, note=body.note if body else ""
    )
    await _changed(state, session, row, "acknowledged")
    return AlertPublic.of(row)


@router.post("/{alert_id}/clear", response_model=AlertPublic)
async def clear(
    state: StateDep,
    session: SessionDep,
    principal: CurrentPrincipal,
    alert_id: int,
    body: AlertNote | None = None,
) -> AlertPublic:
    """Clear by hand (rule alerts also clear themselves when their condition ends)."""
    row = await alert_service.clear(
        session, alert_id=alert_id, by=principal.name, note=body.note if body else ""
    )
    await _changed(state, session, row, "cleared")
    return AlertPublic.of(row)

"""Firmware rollouts: create, list, inspect per device, pause, resume, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status

from iotp.api.control import (
    RolloutCreate,
    RolloutDevicePublic,
    RolloutPublic,
    RolloutsPublic,
    request,
)
from iotp.api.deps import SessionDep, StateDep
from iotp.api.security import CurrentPrincipal
from iotp.db.models import RolloutRow
from iotp.protocol.control import ControlRequest
from iotp.services import rollouts as rollout_service
from iotp.services.auth import Role
from iotp.services.rollouts import DeviceStatus

router = APIRouter(prefix="/api/rollouts", tags=["rollouts"])


async def _public(
    session: SessionDep,
    row: RolloutRow,
    *,
    with_devices: bool = False,
    device_status: str | None = None,
) -> RolloutPublic:
    counts = (await rollout_service.counts(session, [row.id]))[row.id]
    out = RolloutPublic.model_validate(rollout_service.to_dict(row, counts))
    if with_devices:
        devices = await rollout_service.devices_of(session, row.id, status=device_status)
        out.devices = [RolloutDevicePublic.of(d) for d in devices]
    return out


@router.post("", response_model=RolloutPublic, status_code=status.HTTP_201_CREATED)
async def create_rollout(
    state: StateDep,
    session: SessionDep,
    principal: CurrentPrincipal,
    body: RolloutCreate,
    http: Request,
) -> RolloutPublic:
    """An unsigned bundle needs ``allow_unsigned``, which only an admin may set."""
    if body.allow_unsigned and not principal.role.allows(Role.ADMIN):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "allow_unsigned needs the admin role")
    row = await rollout_service.create(
        session,
        firmware_id=body.firmware_id,
        selector=body.selector.to_selector(),
        rate_per_minute=body.rate_per_minute,
        failure_threshold=body.failure_threshold,
        device_timeout=body.timeout,
        # Each device's ota command gets this URL signed for it when it starts.
        download_base=body.base_url or str(http.base_url),
        allow_unsigned=body.allow_unsigned,
        allow_downgrade=body.allow_downgrade,
    )
    await session.commit()
    request(state, ControlRequest.ROLLOUT, [])
    return await _public(session, row)


@router.get("", response_model=RolloutsPublic)
async def list_rollouts(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> RolloutsPublic:
    rows = await rollout_service.list_rollouts(session, limit=limit)
    counts = await rollout_service.counts(session, [r.id for r in rows])
    data = [RolloutPublic.model_validate(rollout_service.to_dict(r, counts[r.id])) for r in rows]
    return RolloutsPublic(data=data, count=len(data))


@router.get("/{rollout_id}", response_model=RolloutPublic)
async def get_rollout(
    session: SessionDep,
    rollout_id: int,
    device_status: Annotated[DeviceStatus | None, Query()] = None,
) -> RolloutPublic:
    """The rollout with every device's status (filter with device_status)."""
    row = await rollout_service.get(session, rollout_id)
    return await _public(
        session,
        row,
        with_devices=True,
        device_status=device_status.value if device_status else None,
    )


@router.post("/{rollout_id}/pause", response_model=RolloutPublic)
async def pause_rollout(state: StateDep, session: SessionDep, rollout_id: int) -> RolloutPublic:
    row = await rollout_service.pause(session, rollout_id=rollout_id)
    await session.commit()
    request(state, ControlRequest.ROLLOUT, [])
    return await _public(session, row)


@router.post("/{rollout_id}/resume", response_model=RolloutPublic)
async def resume_rollout(state: StateDep, session: SessionDep, rollout_id: int) -> RolloutPublic:
    """Resume; the failure threshold then counts failures from now on."""
    row = await rollout_service.resume(session, rollout_id=rollout_id)
    await session.commit()
    request(state, ControlRequest.ROLLOUT, [])
    return await _public(session, row)


@router.post("/{rollout_id}/cancel", response_model=RolloutPublic)
async def cancel_rollout(state: StateDep, session: SessionDep, rollout_id: int) -> RolloutPublic:
    """Stop starting devices; devices already updating are still tracked to the end."""
    row = await rollout_service.cancel(session, rollout_id=rollout_id)
    await session.commit()
    request(state, ControlRequest.ROLLOUT, [])
    return await _public(session, row)

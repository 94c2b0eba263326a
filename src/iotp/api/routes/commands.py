"""Commands: send (optionally waiting for the ack), history, cancel, bulk, stats."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status

from iotp.api.control import (
    WAIT_GRACE_SECONDS,
    BulkCommandCreate,
    BulkPublic,
    BulkResult,
    CommandCreate,
    CommandPublic,
    CommandsPublic,
    CommandStatsPublic,
    dispatch,
    emit,
    publisher,
    wait_for_end,
)
from iotp.api.deps import SessionDep, StateDep
from iotp.api.security import CurrentPrincipal
from iotp.errors import InvalidRequestError
from iotp.protocol import secrets
from iotp.protocol.events import CommandStatus
from iotp.services import commands as command_service
from iotp.services import devices as device_service
from iotp.services import firmware as firmware_service
from iotp.services import groups
from iotp.services import stats as stats_service
from iotp.services.auth import Role

router = APIRouter(tags=["commands"])

WaitQuery = Annotated[
    bool, Query(description="return when the command has finished (or its timeout passed)")
]


@router.post(
    "/api/devices/{device_id}/commands",
    response_model=CommandPublic,
    status_code=status.HTTP_201_CREATED,
)
async def send_command(
    state: StateDep,
    session: SessionDep,
    device_id: str,
    body: CommandCreate,
    principal: CurrentPrincipal,
    http: Request,
    wait: WaitQuery = False,
) -> CommandPublic:
    """An ``ota`` whose ``url`` is this platform's ``/api/firmware/{id}/download`` (no
    query) is sent with that URL signed for this device and command: the device needs
    no token, and the URL is refused once the command has ended."""
    hidden = secrets.secret_keys(body.params or {})
    if hidden and not principal.role.allows(Role.ADMIN):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"setting {hidden} (secret parameters) needs the admin role"
        )
    row = await command_service.issue(
        session,
        device=device_id,
        command=body.command,
        params=body.params,
        ack_timeout=body.timeout,
        ttl=body.ttl,
        claim_if_online=publisher(state),
        box=state.command_sender.box,
        source="user" if principal.kind == "user" else "api",
        publish_event=state.publish_event,
    )
    firmware_service.sign_ota_url(row, key=http.app.state.security.secret_key)
    data = command_service.to_dict(row)
    futures = state.command_waiters.watch({row.id: data}) if wait else {}
    await session.commit()
    dispatch(state, [row])
    if wait:
        ended = await wait_for_end(
            state, session, futures, seconds=row.timeout + WAIT_GRACE_SECONDS
        )
        data = ended.get(row.id, data)
    return CommandPublic.of(data)


@router.get("/api/devices/{device_id}/commands", response_model=CommandsPublic)
async def device_commands(
    session: SessionDep,
    device_id: str,
    status_: Annotated[CommandStatus | None, Query(alias="status")] = None,
    command: Annotated[str | None, Query(max_length=64)] = None,
    source: Annotated[str | None, Query(max_length=16)] = None,
    before: Annotated[float | None, Query(description="created before (epoch s)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CommandsPublic:
    await device_service.get(session, device_id)
    rows = await command_service.list_for_device(
        session,
        device_id=device_id,
        status=status_.value if status_ else None,
        command=command,
        source=source,
        before=before,
        limit=limit,
    )
    return CommandsPublic(
        data=[CommandPublic.of(command_service.to_dict(r)) for r in rows], count=len(rows)
    )


@router.get("/api/commands/stats", response_model=CommandStatsPublic)
async def command_stats(session: SessionDep) -> CommandStatsPublic:
    counters: dict[str, int] = {}
    for row in await stats_service.load(session):
        if row.kind == "worker":
            for key, n in ((row.data or {}).get("commands") or {}).items():
                counters[key] = counters.get(key, 0) + int(n)
    return CommandStatsPublic(
        by_status=await command_service.count_by_status(session), counters=counters
    )


@router.post("/api/commands/bulk", response_model=BulkPublic, status_code=status.HTTP_201_CREATED)
async def bulk_command(
    state: StateDep, session: SessionDep, body: BulkCommandCreate, wait: WaitQuery = False
) -> BulkPublic:
    """One command to every device the selector matches; a result per device."""
    command_service.check_limits(body.timeout, body.ttl)
    devices, missing = await groups.resolve(session, body.selector.to_selector())
    now = time.time()
    results: list[BulkResult] = [
        BulkResult(device_id=d, ok=False, error=f"device {d!r} not found") for d in missing
    ]
    rows = []
    owner = publisher(state)
    for device in devices:
        try:
            row = await command_service.issue(
                session,
                device=device,
                command=body.command,
                params=body.params,
                ack_timeout=body.timeout,
                ttl=body.ttl,
                now=now,
                source="bulk",
                claim_if_online=owner,
                publish_event=state.publish_event,
            )
        except InvalidRequestError as exc:
            results.append(BulkResult(device_id=device.id, ok=False, error=str(exc)))
            continue
        rows.append(row)
    data = {row.id: command_service.to_dict(row) for row in rows}
    futures = state.command_waiters.watch(data) if wait else {}
    await session.commit()
    dispatch(state, rows)
    if wait and rows:
        data.update(
            await wait_for_end(state, session, futures, seconds=body.timeout + WAIT_GRACE_SECONDS)
        )
    by_status: dict[str, int] = {}
    for row in rows:
        command = data[row.id]
        by_status[command["status"]] = by_status.get(command["status"], 0) + 1
        results.append(
            BulkResult(device_id=row.device_id, ok=True, command=CommandPublic.of(command))
        )
    results.sort(key=lambda r: r.device_id)
    return BulkPublic(
        data=results,
        count=len(results),
        created=len(rows),
        rejected=len(results) - len(rows),
        by_status=by_status,
    )


@router.get("/api/commands/{command_id}", response_model=CommandPublic)
async def get_command(session: SessionDep, command_id: str) -> CommandPublic:
    row = await command_service.get(session, command_id)
    return CommandPublic.of(command_service.to_dict(row))


@router.delete("/api/commands/{command_id}", response_model=CommandPublic)
async def cancel_command(state: StateDep, session: SessionDep, command_id: str) -> CommandPublic:
    """Cancel a queued command (409 once it is being sent, was sent or has finished)."""
    row = await command_service.cancel(session, command_id=command_id, now=time.time())
    await session.commit()
    data = command_service.to_dict(row)
    emit(state, data, row.finished_at or time.time())
    return CommandPublic.of(data)

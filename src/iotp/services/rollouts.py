"""Firmware rollouts: a firmware to a selection of devices at a paced rate, with a
failure threshold that pauses the rollout, and a status per device derived from the
device's own reports (its ``ota`` command's progress/ok/error acks and the firmware
version in its ``info``; from a device that does not ack, its ``updating`` and
``update_success`` status messages).

Per-device status: pending -> sent -> downloading -> installed | failed | rolled_back,
plus skipped (already on the version) and cancelled. The API creates and steers
rollouts; the worker (iotp.worker.control) starts devices and tracks their progress.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.models import CommandRow, Device, RolloutDevice, RolloutRow
from iotp.errors import ConflictError, InvalidRequestError, NotFoundError
from iotp.protocol.events import CommandStatus, Presence, PublishEvent
from iotp.services import commands as command_service
from iotp.services import firmware as firmware_service
from iotp.services.groups import Selector, resolve

MAX_START_PER_TICK = 200
OTA_TTL_SECONDS = 300.0


class RolloutStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class DeviceStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DOWNLOADING = "downloading"
    INSTALLED = "installed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


IN_FLIGHT = (DeviceStatus.SENT.value, DeviceStatus.DOWNLOADING.value)
OPEN = (DeviceStatus.PENDING.value, *IN_FLIGHT)
FAILURES = (DeviceStatus.FAILED.value, DeviceStatus.ROLLED_BACK.value)


@dataclass(frozen=True, slots=True)
class DeviceUpdate:
    status: str
    stage: str | None = None
    error: str | None = None
    clear_command: bool = False


def derive_device_status(
    *,
    current: str,
    command_status: str | None,
    command_error: str | None,
    progress: dict[str, Any] | None,
    result: Any,
    device_firmware: str | None,
    target: str,
) -> DeviceUpdate | None:
    """What a rollout device's status should be now (None: unchanged). Pure."""
    if device_firmware == target:
        new = DeviceUpdate(DeviceStatus.INSTALLED.value)
    elif command_status in (None, CommandStatus.QUEUED, CommandStatus.SENDING):
        return None
    elif command_status == CommandStatus.ACKED:
        reported = result.get("version") if isinstance(result, dict) else None
        if reported is None or reported == target:
            new = DeviceUpdate(DeviceStatus.INSTALLED.value)
        else:
            new = DeviceUpdate(
                DeviceStatus.FAILED.value, error=f"device reports version {reported!r}"
            )
    elif command_status == CommandStatus.FAILED:
        if (command_error or "").strip().lower() == "rolled_back":
            new = DeviceUpdate(DeviceStatus.ROLLED_BACK.value, error=command_error)
        else:
            new = DeviceUpdate(DeviceStatus.FAILED.value, error=command_error)
    elif command_status == CommandStatus.TIMED_OUT:
        new = DeviceUpdate(DeviceStatus.FAILED.value, error="timed out waiting for the device")
    elif command_status in (CommandStatus.EXPIRED, CommandStatus.CANCELLED):
        # Never reached the device (it went offline): try again when it is back.
        new = DeviceUpdate(DeviceStatus.PENDING.value, clear_command=True)
    elif progress:
        new = DeviceUpdate(DeviceStatus.DOWNLOADING.value, stage=str(progress.get("stage", "")))
    elif current == DeviceStatus.DOWNLOADING:
        # Said by the device's own status message (follow_update_status), which leaves no
        # progress on its command: a sent command does not take that back.
        return None
    else:
        new = DeviceUpdate(DeviceStatus.SENT.value)
    if new.status == current and not new.clear_command and new.stage is None:
        return None
    return new


def failure_limit(threshold: float, targeted: int) -> int:
    return max(1, math.ceil(threshold * targeted))


def starts_due(*, now: float, next_start_at: float, rate_per_minute: float) -> tuple[int, float]:
    """How many devices may start now, and the base for the next slot."""
    spacing = 60.0 / rate_per_minute
    # Catch up at most one second (or one slot) of starts: no burst after idling.
    base = max(next_start_at, now - max(spacing, 1.0))
    if now < base:
        return 0, base
    return min(MAX_START_PER_TICK, int((now - base) // spacing) + 1), base


# ---- API side ------------------------------------------------------------------------


async def create(
    session: AsyncSession,
    *,
    firmware_id: int,
    selector: Selector,
    rate_per_minute: float,
    failure_threshold: float,
    device_timeout: float,
    download_base: str,
    allow_unsigned: bool = False,
    allow_downgrade: bool = False,
    now: float | None = None,
) -> RolloutRow:
    """``download_base`` is where devices reach the API; each device's ``ota`` command
    gets its own signed URL when it starts (:func:`advance`). An unsigned bundle is
    refused unless ``allow_unsigned`` (the caller checks that an admin asked);
    ``allow_downgrade`` lets devices install a version older than the one they run."""
    now = time.time() if now is None else now
    if not 0 < rate_per_minute <= 100_000:
        raise InvalidRequestError("rate_per_minute must be > 0 and <= 100000")
    if not 0 < failure_threshold <= 1:
        raise InvalidRequestError("failure_threshold must be a fraction > 0 and <= 1")
    if not 10 <= device_timeout <= command_service.MAX_TIMEOUT:
        raise InvalidRequestError("timeout must be 10..3600 seconds per device")
    fw = await firmware_service.get(session, firmware_id)
    if fw.key_id is None and not allow_unsigned:
        raise InvalidRequestError(
            f"firmware {fw.version!r} is unsigned: devices refuse it unless flashed to allow "
            "unsigned bundles; sign it (`iotp firmware sign`, or upload it where the server "
            "has a key: `iotp firmware keygen`) or start the rollout with allow_unsigned "
            "(admins only)"
        )
    devices, missing = await resolve(session, selector)
    if missing:
        raise InvalidRequestError(f"unknown device(s): {missing[:20]}")
    if fw.device_type:
        wrong = [d.id for d in devices if d.type and d.type != fw.device_type]
        if wrong:
            raise InvalidRequestError(
                f"firmware is for device type {fw.device_type!r}; these are not: {wrong[:20]}"
            )
    if not devices:
        raise InvalidRequestError("the selector matches no devices")
    # A device that never described itself (capabilities unknown) may update itself: one
    # built to the original design reports it by status messages (follow_update_status).
    no_ota = [
        d.id
        for d in devices
        if (caps := command_service.known_capabilities(d)) is not None and "ota" not in caps
    ]
    if no_ota:
        raise InvalidRequestError(
            f"device(s) without the 'ota' capability: {no_ota[:20]}"
            + (f" (+{len(no_ota) - 20} more)" if len(no_ota) > 20 else "")
        )
    rollout = RolloutRow(
        firmware_id=fw.id,
        version=fw.version,
        sha256=fw.sha256,
        size=fw.size,
        download_url=download_base.rstrip("/") + firmware_service.download_path(fw.id),
        status=RolloutStatus.RUNNING.value,
        selector=selector.as_dict(),
        rate_per_minute=float(rate_per_minute),
        failure_threshold=float(failure_threshold),
        timeout=float(device_timeout),
        created_at=now,
        updated_at=now,
        next_start_at=now,
        failure_baseline=0,
        key_id=fw.key_id,
        allow_unsigned=allow_unsigned,
        allow_downgrade=allow_downgrade,
    )
    session.add(rollout)
    await session.flush()
    for d in devices:
        on_it = d.firmware_version == fw.version
        session.add(
            RolloutDevice(
                rollout_id=rollout.id,
                device_id=d.id,
                status=(DeviceStatus.SKIPPED if on_it else DeviceStatus.PENDING).value,
                error="already on this version" if on_it else None,
                from_version=d.firmware_version,
                updated_at=now,
            )
        )
    await session.flush()
    await _complete_if_done(session, rollout, now)
    return rollout


async def get(session: AsyncSession, rollout_id: int) -> RolloutRow:
    row = await session.get(RolloutRow, rollout_id)
    if row is None:
        raise NotFoundError("rollout", str(rollout_id))
    return row


async def list_rollouts(session: AsyncSession, *, limit: int = 100) -> list[RolloutRow]:
    query = select(RolloutRow).order_by(RolloutRow.created_at.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def counts(session: AsyncSession, rollout_ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {rid: {} for rid in rollout_ids}
    if not rollout_ids:
        return out
    rows = await session.execute(
        select(RolloutDevice.rollout_id, RolloutDevice.status, func.count())
        .where(RolloutDevice.rollout_id.in_(rollout_ids))
        .group_by(RolloutDevice.rollout_id, RolloutDevice.status)
    )
    for rid, status, n in rows.all():
        out[rid][status] = int(n)
    return out


async def devices_of(
    session: AsyncSession, rollout_id: int, *, status: str | None = None
) -> list[RolloutDevice]:
    query = select(RolloutDevice).where(RolloutDevice.rollout_id == rollout_id)
    if status:
        query = query.where(RolloutDevice.status == status)
    return list((await session.scalars(query.order_by(RolloutDevice.device_id))).all())


async def pause(
    session: AsyncSession, *, rollout_id: int, reason: str = "paused by user"
) -> RolloutRow:
    row = await get(session, rollout_id)
    if row.status != RolloutStatus.RUNNING:
        raise ConflictError(f"rollout {rollout_id} is {row.status}; only a running one pauses")
    row.status = RolloutStatus.PAUSED.value
    row.paused_reason = reason
    row.updated_at = time.time()
    return row


async def resume(session: AsyncSession, *, rollout_id: int) -> RolloutRow:
    row = await get(session, rollout_id)
    if row.status != RolloutStatus.PAUSED:
        raise ConflictError(f"rollout {rollout_id} is {row.status}; only a paused one resumes")
    failed = await _count(session, rollout_id, FAILURES)
    row.status = RolloutStatus.RUNNING.value
    row.paused_reason = None
    row.failure_baseline = failed
    row.updated_at = time.time()
    row.next_start_at = row.updated_at
    return row


async def cancel(session: AsyncSession, *, rollout_id: int) -> RolloutRow:
    row = await get(session, rollout_id)
    if row.status not in (RolloutStatus.RUNNING, RolloutStatus.PAUSED):
        raise ConflictError(f"rollout {rollout_id} is already {row.status}")
    now = time.time()
    pending = await devices_of(session, rollout_id, status=DeviceStatus.PENDING.value)
    queued = [d.command_id for d in pending if d.command_id]
    if queued:
        await session.execute(
            update(CommandRow)
            .where(CommandRow.id.in_(queued), CommandRow.status == CommandStatus.QUEUED.value)
            .values(status=CommandStatus.CANCELLED.value, finished_at=now, error="cancelled")
            .execution_options(synchronize_session=False)
        )
    for d in pending:
        d.status = DeviceStatus.CANCELLED.value
        d.updated_at = now
    row.status = RolloutStatus.CANCELLED.value
    row.finished_at = now
    row.updated_at = now
    return row


# ---- worker side ---------------------------------------------------------------------


async def _count(session: AsyncSession, rollout_id: int, statuses: tuple[str, ...]) -> int:
    n = await session.scalar(
        select(func.count())
        .select_from(RolloutDevice)
        .where(RolloutDevice.rollout_id == rollout_id, RolloutDevice.status.in_(statuses))
    )
    return int(n or 0)


async def _complete_if_done(session: AsyncSession, rollout: RolloutRow, now: float) -> bool:
    if rollout.status not in (RolloutStatus.RUNNING, RolloutStatus.PAUSED):
        return False
    if await _count(session, rollout.id, OPEN):
        return False
    rollout.status = RolloutStatus.COMPLETED.value
    rollout.finished_at = now
    rollout.updated_at = now
    return True


async def track(session: AsyncSession, *, now: float) -> set[int]:
    """Refresh in-flight devices from their commands and firmware. Returns the ids of
    rollouts that changed."""
    rows = await session.execute(
        select(
            RolloutDevice,
            CommandRow.status,
            CommandRow.error,
            CommandRow.progress,
            CommandRow.result,
            Device.firmware_version,
            RolloutRow.version,
        )
        .join(RolloutRow, RolloutRow.id == RolloutDevice.rollout_id)
        .join(Device, Device.id == RolloutDevice.device_id)
        .outerjoin(CommandRow, CommandRow.id == RolloutDevice.command_id)
        .where(
            (RolloutDevice.status.in_(IN_FLIGHT))
            | (
                (RolloutDevice.status == DeviceStatus.PENDING)
                & RolloutDevice.command_id.is_not(None)
            )
        )
    )
    changed: set[int] = set()
    for rd, c_status, c_error, progress, result, firmware, target in rows.all():
        new = derive_device_status(
            current=rd.status,
            command_status=c_status,
            command_error=c_error,
            progress=progress,
            result=result,
            device_firmware=firmware,
            target=target,
        )
        if new is None:
            continue
        rd.status = new.status
        rd.stage = new.stage if new.stage is not None else rd.stage
        rd.error = new.error
        if new.clear_command:
            rd.command_id = None
        rd.updated_at = now
        changed.add(rd.rollout_id)
    return changed


async def follow_update_status(
    session: AsyncSession, *, device_id: str, status: str, now: float
) -> set[int]:
    """A device's own word on its update, by status message (the original design's
    devices, which never ack their ``ota`` command): ``updating`` moves its in-flight
    rollout device to downloading, ``update_success`` to installed. Returns the ids of
    the rollouts that changed."""
    rows = (
        await session.scalars(
            select(RolloutDevice)
            .join(RolloutRow, RolloutRow.id == RolloutDevice.rollout_id)
            .where(
                RolloutDevice.device_id == device_id,
                RolloutRow.status.in_([RolloutStatus.RUNNING, RolloutStatus.PAUSED]),
                RolloutDevice.status.in_(IN_FLIGHT)
                | (
                    (RolloutDevice.status == DeviceStatus.PENDING)
                    & RolloutDevice.command_id.is_not(None)
                ),
            )
        )
    ).all()
    changed: set[int] = set()
    for rd in rows:
        if status == "update_success":
            rd.status = DeviceStatus.INSTALLED.value
            rd.error = None
        elif rd.status != DeviceStatus.DOWNLOADING:
            rd.status = DeviceStatus.DOWNLOADING.value
        else:
            continue
        rd.stage = status
        rd.updated_at = now
        changed.add(rd.rollout_id)
    return changed


async def advance(
    session: AsyncSession, *, now: float, key: str, publish_event: PublishEvent
) -> list[CommandRow]:
    """For every running rollout: pause on the failure threshold, start the devices
    whose slot has come (online ones; offline ones wait), complete when all are done.
    Each ``ota`` command is issued as every command is (:func:`iotp.services.commands.issue`)
    and carries a download URL signed with ``key`` for its device and itself
    (services.firmware.sign_ota_url); a device that cannot take it (no ``ota``
    capability, say) fails with the reason. Returns the ota commands queued (the caller
    commits, then dispatches them)."""
    queued: list[CommandRow] = []
    active = (
        await session.scalars(
            select(RolloutRow).where(
                RolloutRow.status.in_([RolloutStatus.RUNNING, RolloutStatus.PAUSED])
            )
        )
    ).all()
    for rollout in active:
        if await _complete_if_done(session, rollout, now):
            continue
        if rollout.status != RolloutStatus.RUNNING:
            continue
        failed = await _count(session, rollout.id, FAILURES)
        targeted = await session.scalar(
            select(func.count())
            .select_from(RolloutDevice)
            .where(
                RolloutDevice.rollout_id == rollout.id,
                RolloutDevice.status != DeviceStatus.SKIPPED,
            )
        )
        limit = failure_limit(rollout.failure_threshold, int(targeted or 0))
        if failed - rollout.failure_baseline >= limit:
            last_error = await session.scalar(
                select(RolloutDevice.error)
                .where(
                    RolloutDevice.rollout_id == rollout.id,
                    RolloutDevice.status.in_(FAILURES),
                    RolloutDevice.error.is_not(None),
                )
                .order_by(RolloutDevice.updated_at.desc())
                .limit(1)
            )
            rollout.status = RolloutStatus.PAUSED.value
            rollout.paused_reason = (
                f"failure threshold reached: {failed - rollout.failure_baseline} failed "
                f"(limit {limit} = {rollout.failure_threshold:g} of {targeted})"
                + (f"; last error: {last_error}" if last_error else "")
            )
            rollout.updated_at = now
            continue
        n, base = starts_due(
            now=now, next_start_at=rollout.next_start_at, rate_per_minute=rollout.rate_per_minute
        )
        if n == 0:
            continue
        candidates = (
            await session.execute(
                select(RolloutDevice, Device)
                .join(Device, Device.id == RolloutDevice.device_id)
                .where(
                    RolloutDevice.rollout_id == rollout.id,
                    RolloutDevice.status == DeviceStatus.PENDING,
                    RolloutDevice.command_id.is_(None),
                    Device.status == Presence.ONLINE,
                )
                .order_by(RolloutDevice.device_id)
                .limit(n)
            )
        ).all()
        started = 0
        for rd, device in candidates:
            rd.updated_at = now
            if device.firmware_version == rollout.version:
                rd.status = DeviceStatus.INSTALLED.value
                continue
            try:
                row = await command_service.issue(
                    session,
                    device=device,
                    command="ota",
                    params={
                        # Rollouts created before per-device URLs stored a signed one.
                        "url": rollout.download_url.split("?", 1)[0],
                        "sha256": rollout.sha256,
                        "version": rollout.version,
                        "size": rollout.size,
                        **({"allow_downgrade": True} if rollout.allow_downgrade else {}),
                    },
                    ack_timeout=rollout.timeout,
                    ttl=min(OTA_TTL_SECONDS, rollout.timeout),
                    now=now,
                    source="rollout",
                    rollout_id=rollout.id,
                    publish_event=publish_event,
                )
            except InvalidRequestError as exc:
                rd.status = DeviceStatus.FAILED.value
                rd.error = str(exc)[:500]
                continue
            try:
                firmware_service.sign_ota_url(row, key=key)
            except InvalidRequestError as exc:
                session.expunge(row)  # never stored, never announced
                rd.status = DeviceStatus.FAILED.value
                rd.error = str(exc)[:500]
                continue
            rd.command_id = row.id
            queued.append(row)
            started += 1
        rollout.next_start_at = base + started * (60.0 / rollout.rate_per_minute)
        if started:
            rollout.updated_at = now
    await session.flush()
    return queued


def to_dict(row: RolloutRow, device_counts: dict[str, int]) -> dict[str, Any]:
    total = sum(device_counts.values())
    return {
        "id": row.id,
        "firmware_id": row.firmware_id,
        "version": row.version,
        "sha256": row.sha256,
        "size": row.size,
        "download_url": row.download_url.split("?", 1)[0],
        "status": row.status,
        "selector": row.selector,
        "rate_per_minute": row.rate_per_minute,
        "failure_threshold": row.failure_threshold,
        "timeout": row.timeout,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "finished_at": row.finished_at,
        "paused_reason": row.paused_reason,
        "key_id": row.key_id,
        "allow_unsigned": row.allow_unsigned,
        "allow_downgrade": row.allow_downgrade,
        "devices_total": total,
        "counts": {s.value: device_counts.get(s.value, 0) for s in DeviceStatus},
    }

"""Commands to devices: the one way a command is issued (:func:`issue`: validated
against its parameters and the device's capabilities, stored, announced), the lifecycle
state machine, and the database operations that move a command through it.

Lifecycle (every transition is a ``command_update`` event)::

    queued -> sending -> sent -> acked | failed | timed_out
    queued -> expired | cancelled
    sending -> queued            (publish not confirmed, or its publisher died: resent)
    sending -> acked | failed    (the device's ack beat the broker's PUBACK; reported as
                                  sent, then acked/failed)

A command for a device that is online when it is created starts at ``sending``.

``sending`` is the publisher's claim: a conditional UPDATE (queued -> sending, with
``claimed_at``/``claimed_by``) is committed *before* the QoS 1 publish, so each command
has one publisher at a time. The command becomes ``sent`` only after the broker's PUBACK
(the broker has taken it), so nothing is marked sent that was not published. A claim
whose publisher crashed (older than CLAIM_TIMEOUT) goes back to ``queued`` and is
published again; a device can therefore see a command twice, and the firmware answers a
repeated id with its first ack without running it again (docs/protocol.md). ``acked`` /
``failed`` come only from the device's own ack on its own ack topic. State lives in the
database, so it survives a restart of the API or the worker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, cast

import orjson
from cryptography.fernet import Fernet
from sqlalchemy import (
    ColumnElement,
    Float,
    String,
    Text,
    case,
    column,
    event,
    func,
    select,
    update,
    values,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningUpdate

from iotp.db.models import CommandRow, Device, JsonType
from iotp.errors import ConflictError, InvalidRequestError, NotFoundError
from iotp.protocol import secrets
from iotp.protocol.commands import BUILTIN_COMMANDS, COMMAND_PARAMS, ParamsError, parse_params
from iotp.protocol.events import CommandStatus, EventType, Presence, PublishEvent
from iotp.protocol.payloads import NAME_RE, Ack
from iotp.services.times import iso_time, with_iso_ts

DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 3600.0
DEFAULT_TTL = 60.0
# A ``sending`` claim older than this is presumed dead (its publisher crashed) and the
# command goes back to ``queued``. Publishers give up waiting for the broker's PUBACK
# well before (PUBLISH_CONFIRM_TIMEOUT) and release their claim themselves.
CLAIM_TIMEOUT = 10.0
PUBLISH_CONFIRM_TIMEOUT = 5.0
MAX_TTL = 7 * 86400.0
MAX_PARAMS_BYTES = 8 * 1024
# The note on a command sent to a device that has never acknowledged anything: it stays
# ``sent`` (delivered to the broker) rather than ending ``timed_out``.
NO_ACKS = "device does not acknowledge"


# The one table of the lifecycle: every UPDATE below takes its status condition from it
# (:func:`_move`), so no write can move a command along an edge that is not here (a late
# ack cannot reopen a finished command, a PUBACK cannot un-ack one).
TERMINAL = frozenset(
    {
        CommandStatus.ACKED,
        CommandStatus.FAILED,
        CommandStatus.TIMED_OUT,
        CommandStatus.EXPIRED,
        CommandStatus.CANCELLED,
    }
)
TRANSITIONS: dict[CommandStatus, frozenset[CommandStatus]] = {
    CommandStatus.QUEUED: frozenset(
        {CommandStatus.SENDING, CommandStatus.EXPIRED, CommandStatus.CANCELLED}
    ),
    CommandStatus.SENDING: frozenset(
        {CommandStatus.SENT, CommandStatus.QUEUED, CommandStatus.ACKED, CommandStatus.FAILED}
    ),
    CommandStatus.SENT: frozenset(
        {CommandStatus.ACKED, CommandStatus.FAILED, CommandStatus.TIMED_OUT}
    ),
}


class InvalidTransition(ConflictError):
    def __init__(self, old: str, new: str) -> None:
        super().__init__(f"a {old} command cannot become {new}")
        self.old = old
        self.new = new


def check_transition(old: str, new: str) -> None:
    """Raise InvalidTransition unless the table allows ``old`` -> ``new``."""
    allowed = TRANSITIONS.get(CommandStatus(old), frozenset())
    if CommandStatus(new) not in allowed:
        raise InvalidTransition(old, new)


def is_terminal(status: str) -> bool:
    """Whether a command in this status has ended (no transition leaves it)."""
    return status in TERMINAL


def sources(new: CommandStatus) -> frozenset[CommandStatus]:
    """The statuses the table lets become ``new``."""
    return frozenset(old for old, allowed in TRANSITIONS.items() if new in allowed)


def _may_become(new: CommandStatus) -> ColumnElement[bool]:
    return CommandRow.status.in_(sorted(s.value for s in sources(new)))


def _move(
    new: CommandStatus, *conditions: ColumnElement[bool], now: float, **values: Any
) -> ReturningUpdate[CommandRow]:
    """The UPDATE moving the matching commands to ``new``: only from a status the table
    allows, and with what every end takes (finish time; sealed secrets erased, kept only
    while the command may still be published)."""
    if new in TERMINAL:
        values = {"finished_at": now, "secret_params": None, **values}
    return (
        update(CommandRow)
        .where(_may_become(new), *conditions)
        .values(status=new.value, **values)
        .returning(CommandRow)
        # The returned rows show what was written even when the session already holds
        # them (a caller that created or read the command in the same session).
        .execution_options(synchronize_session=False, populate_existing=True)
    )


def ack_ending(ack: Ack) -> dict[str, Any]:
    """What a final ack (``ok``/``error``) makes of its command: the status, the result
    (redacted: a device may echo what it was sent) and the error. The recorder
    (:func:`apply_ack`) and the API's early answer to ``?wait=true`` both use it."""
    ok = ack.status == "ok"
    return {
        "status": CommandStatus.ACKED if ok else CommandStatus.FAILED,
        "result": secrets.redact(ack.result),
        "error": None if ok else (ack.error or "device reported an error"),
    }


# ---- secret parameters (protocol.secrets) ---------------------------------------------


class SecretBox:
    """Encrypts a command's secret parameters at rest (Fernet, with a key derived from
    the install's secret key), for as long as the command may still be published."""

    def __init__(self, secret_key: str) -> None:
        raw = hmac.new(secret_key.encode(), b"iotp-command-secrets", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(raw))

    def seal(self, values: dict[str, Any]) -> str:
        return self._fernet.encrypt(orjson.dumps(values)).decode()

    def open(self, sealed: str) -> dict[str, Any]:
        opened: dict[str, Any] = orjson.loads(self._fernet.decrypt(sealed.encode()))
        return opened


# ---- validation against the device's capabilities ------------------------------------

# The capability a device must list for each built-in command (relays are checked by name).
REQUIRED_CAPABILITY = {
    "servo": "servo",
    "reboot": "reboot",
    "automation": "automation",
    "ota": "ota",
    "webhook": "webhook",
}


def _bad(message: str) -> InvalidRequestError:
    return InvalidRequestError(message)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


# What a device that never sent ``info`` (built to the original design: data, commands
# and status only) may be sent: the standard commands (any relay name, any custom name)
# and every command that needs no capability on any device.
UNKNOWN_CAPABILITIES_COMMANDS = frozenset({"relay", "servo", "reboot", "custom"}) | (
    frozenset(BUILTIN_COMMANDS) - frozenset(REQUIRED_CAPABILITY)
)


def known_capabilities(device: Device) -> list[str] | None:
    """The device's capabilities, or None when it never described itself (no ``info``:
    neither a firmware version nor a capability on record)."""
    caps = list(device.capabilities or [])
    if caps or device.firmware_version is not None:
        return caps
    return None


def relay_names(capabilities: Sequence[str]) -> list[str]:
    """The relays a device lists (capabilities ``relay:<name>``)."""
    return [c.split(":", 1)[1] for c in capabilities if c.startswith("relay:")]


def _require(capabilities: Sequence[str], cap: str, command: str) -> None:
    if cap not in capabilities:
        have = ", ".join(capabilities) if capabilities else "none (has it sent its info?)"
        raise _bad(f"device does not support {command!r} (capability {cap!r}); it has: {have}")


def _params(command: str, params: dict[str, Any], where: str | None = None) -> dict[str, Any]:
    try:
        return parse_params(command, params, where)
    except ParamsError as exc:
        raise _bad(str(exc)) from None


def validate_automation(params: dict[str, Any], where: str = "automation") -> dict[str, Any]:
    """Normalised ``automation`` parameters (InvalidRequestError naming ``where``)."""
    return _params("automation", params, where)


def validate(
    command: str,
    params: dict[str, Any] | None,
    capabilities: Sequence[str] | None,
    *,
    allow_secrets: bool = False,
) -> tuple[str, dict[str, Any]]:
    """Check a command against its parameters' shape (iotp.protocol.commands) and the
    device's capabilities (None: unknown, see :func:`known_capabilities`).

    Returns the (wire command, normalised params); raises InvalidRequestError with the
    reason. ``custom`` takes ``name`` (the device's ``cmd:<name>`` capability) and the
    rest of its params are sent as the command's params. Secret parameters
    (protocol.secrets) only where ``allow_secrets``: one device at a time, by an admin."""
    params = dict(params or {})
    hidden = secrets.secret_keys(params)
    if hidden and not allow_secrets:
        raise _bad(
            f"{hidden} are secret parameters: send them to one device at a time"
            " (POST /api/devices/{device_id}/commands, admin role)"
        )
    if capabilities is None:
        return _validate_unknown(command, params)
    caps = list(capabilities)
    if command in REQUIRED_CAPABILITY:
        _require(caps, REQUIRED_CAPABILITY[command], command)
    if command in COMMAND_PARAMS:
        checked = _params(command, params)
        if command == "relay":
            names = relay_names(caps)
            if checked["name"] not in names:
                name = checked["name"]
                raise _bad(f"relay: device has no relay {name!r} (its relays: {names or 'none'})")
        return command, checked
    if command == "custom":
        name = _custom_name(params)
        _require(caps, f"cmd:{name}", "custom")
        return name, params
    if isinstance(command, str) and f"cmd:{command}" in caps:
        return command, params
    raise _bad(
        f"unknown command {command!r}: one of {list(BUILTIN_COMMANDS)} "
        "(or a custom command the device lists as cmd:<name>)"
    )


def _validate_unknown(command: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A device whose capabilities are unknown: the standard commands' shapes are
    checked, what the device has cannot be."""
    if command not in UNKNOWN_CAPABILITIES_COMMANDS:
        raise _bad(
            f"device's capabilities are unknown (it has sent no info): only "
            f"{sorted(UNKNOWN_CAPABILITIES_COMMANDS)} can be sent to it, not {command!r}"
        )
    if command == "custom":
        return _custom_name(params), params
    return command, _params(command, params)


def _custom_name(params: dict[str, Any]) -> str:
    """Take ``name`` out of a custom command's params: the command sent on the wire."""
    name = params.pop("name", None)
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise _bad("custom: params.name must name the device's command (cmd:<name>)")
    if name in BUILTIN_COMMANDS:
        raise _bad(f"custom: {name!r} is a built-in command; send it directly")
    return name


def check_limits(timeout: float, ttl: float) -> None:
    """InvalidRequestError unless the ack timeout and the ttl are within their bounds."""
    if not _is_number(timeout) or not 0.1 <= timeout <= MAX_TIMEOUT:
        raise _bad(f"timeout must be 0.1..{MAX_TIMEOUT:.0f} seconds")
    if not _is_number(ttl) or not 0 <= ttl <= MAX_TTL:
        raise _bad(f"ttl must be 0..{MAX_TTL:.0f} seconds")


# ---- public shape (API responses and command_update events) -------------------------


def to_dict(row: CommandRow) -> dict[str, Any]:
    """The command as the API and its ``command_update`` events show it (times ISO 8601)."""
    progress = row.progress
    if progress and "ts" in progress:
        progress = {**progress, "ts": iso_time(progress["ts"])}
    return {
        "id": row.id,
        "device_id": row.device_id,
        "command": row.command,
        "params": row.params or {},
        "status": row.status,
        "source": row.source,
        "timeout": row.timeout,
        "created_at": iso_time(row.created_at),
        "expires_at": iso_time(row.expires_at),
        "sent_at": iso_time(row.sent_at),
        "deadline": iso_time(row.deadline),
        "finished_at": iso_time(row.finished_at),
        "result": row.result,
        "error": row.error,
        "progress": progress,
        "rollout_id": row.rollout_id,
        "notes": with_iso_ts(row.history),
    }


def wire_payload(row: CommandRow, box: SecretBox) -> dict[str, Any]:
    """What goes to ``devices/{id}/commands`` (docs/protocol.md): the one place secret
    parameters are put back."""
    params = dict(row.params or {})
    if row.secret_params:
        params.update(box.open(row.secret_params))
    return {"id": row.id, "command": row.command, "params": params, "ts": row.sent_at}


# ---- database operations --------------------------------------------------------------


def _new_row(
    *,
    device_id: str,
    command: str,
    params: dict[str, Any],
    timeout: float,
    ttl: float,
    now: float,
    source: str,
    rollout_id: int | None,
    claimed_by: str | None,
) -> CommandRow:
    """A new command: ``queued``, or already ``sending`` (claimed by ``claimed_by``, who
    must publish it once this row is committed)."""
    return CommandRow(
        id=str(uuid.uuid4()),
        device_id=device_id,
        command=command,
        params=params,
        status=(CommandStatus.SENDING if claimed_by else CommandStatus.QUEUED).value,
        source=source,
        timeout=float(timeout),
        created_at=now,
        expires_at=now + float(ttl),
        claimed_at=now if claimed_by else None,
        claimed_by=claimed_by,
        history=[],
        rollout_id=rollout_id,
    )


def sent_view(row: CommandRow) -> dict[str, Any]:
    """The ``sent`` step of a command whose ack arrived while it was still ``sending``
    (the ack proves it was delivered), for its ``command_update`` event."""
    return {
        **to_dict(row),
        "status": CommandStatus.SENT.value,
        "finished_at": None,
        "result": None,
        "error": None,
        "progress": None,
    }


async def issue(
    session: AsyncSession,
    *,
    device: Device | str,
    command: str,
    params: dict[str, Any] | None,
    source: str,
    publish_event: PublishEvent,
    ack_timeout: float = DEFAULT_TIMEOUT,
    ttl: float = DEFAULT_TTL,
    now: float | None = None,
    rollout_id: int | None = None,
    claim_if_online: str | None = None,
    box: SecretBox | None = None,
) -> CommandRow:
    """The one way a command comes to be, whoever asks (one device or bulk through the
    API, rules, the shadow, rollouts): validated, stored, announced.

    The command is checked against its parameters' shape and the device's capabilities
    (InvalidRequestError with the reason; NotFoundError for an unknown device id) and
    added to the session as ``queued``; with ``claim_if_online`` (a publisher id) and the
    device online, as ``sending``, claimed by that publisher, which publishes it once
    committed. Its first ``command_update`` event goes out through ``publish_event`` when
    the caller's transaction commits, never for a command that was rolled back. With
    ``box``, secret parameters are accepted: stored encrypted beside the command,
    redacted in its params, and erased when it ends.

    The caller commits, then sees that the command is published: a ``sending`` one by
    its claimer, a ``queued`` one by asking a worker to dispatch it."""
    check_limits(ack_timeout, ttl)
    if isinstance(device, str):
        found = await session.get(Device, device)
        if found is None:
            raise NotFoundError("device", device)
        device = found
    adapter = (device.meta or {}).get("adapter")
    if command == "ota" and isinstance(adapter, dict):
        # A device mapped from foreign firmware (iotp.adapters) updates with its own tools.
        raise _bad(
            f"OTA does not apply: {device.id} runs foreign firmware (the "
            f"{adapter.get('mapping')} adapter), which updates itself with its own tools"
        )
    capabilities = known_capabilities(device)
    if capabilities is None and command == "ota" and rollout_id is not None:
        # A rollout may include a device that never described itself: one built to the
        # original design reports its update by status messages, which the rollout follows.
        # Sent on its own, an ota command to such a device stays refused.
        capabilities = ["ota"]
    wire, checked = validate(command, params, capabilities, allow_secrets=box is not None)
    shown, hidden = secrets.split(checked)
    row = _new_row(
        device_id=device.id,
        command=wire,
        params=shown,
        timeout=ack_timeout,
        ttl=ttl,
        now=time.time() if now is None else now,
        source=source,
        rollout_id=rollout_id,
        claimed_by=claim_if_online if device.status == Presence.ONLINE else None,
    )
    if hidden and box is not None:
        row.secret_params = box.seal(hidden)
    # Added, not flushed: a bulk command's thousands of rows go in at the commit.
    session.add(row)
    _announce_on_commit(session, row, publish_event)
    return row


# The commands issued in a session's open transaction; announced once it commits.
_ISSUED = "iotp.commands.issued"
_COMMITTING = "iotp.commands.committing"


def _announce_on_commit(session: AsyncSession, row: CommandRow, publish: PublishEvent) -> None:
    session.sync_session.info.setdefault(_ISSUED, []).append((row, publish))


# Listening on the class once, not on each session that issues: a listener added to one
# session copies its event dispatch, which cost more than the rest of issuing a command.
@event.listens_for(Session, "before_commit")
def _snapshot_issued(sync_session: Session) -> None:
    # Savepoints commit too; only the outermost commit makes a command real. The
    # snapshot is taken here, not at issue, so the event shows the command as stored.
    if not sync_session.info.get(_ISSUED) or sync_session.in_nested_transaction():
        return
    issued, sync_session.info[_ISSUED] = sync_session.info[_ISSUED], []
    sync_session.info[_COMMITTING] = [
        (publish, row.device_id, to_dict(row), row.created_at)
        for row, publish in issued
        # A row that a rolled-back savepoint or transaction took away is transient.
        if sa_inspect(row).pending or sa_inspect(row).persistent
    ]


@event.listens_for(Session, "after_commit")
def _announce_issued(sync_session: Session) -> None:
    if _COMMITTING not in sync_session.info or sync_session.in_nested_transaction():
        return
    for publish, device_id, data, ts in sync_session.info.pop(_COMMITTING, []):
        publish(EventType.COMMAND_UPDATE, device_id, data, ts)


async def get(session: AsyncSession, command_id: str) -> CommandRow:
    """The command, or NotFoundError."""
    row = await session.get(CommandRow, command_id)
    if row is None:
        raise NotFoundError("command", command_id)
    return row


async def list_for_device(
    session: AsyncSession,
    *,
    device_id: str,
    status: str | None = None,
    command: str | None = None,
    source: str | None = None,
    before: float | None = None,
    limit: int = 100,
) -> list[CommandRow]:
    """A device's commands, newest first, filtered by status, command name, source and
    creation time (``before``: for paging)."""
    query = select(CommandRow).where(CommandRow.device_id == device_id)
    if status:
        query = query.where(CommandRow.status == status)
    if command:
        query = query.where(CommandRow.command == command)
    if source:
        query = query.where(CommandRow.source == source)
    if before is not None:
        query = query.where(CommandRow.created_at < before)
    query = query.order_by(CommandRow.created_at.desc(), CommandRow.id).limit(limit)
    return list((await session.scalars(query)).all())


async def cancel(session: AsyncSession, *, command_id: str, now: float) -> CommandRow:
    """queued -> cancelled; InvalidTransition (a conflict) once it is being sent, was
    sent or has ended."""
    row = await get(session, command_id)
    check_transition(row.status, CommandStatus.CANCELLED)
    stmt = _move(CommandStatus.CANCELLED, CommandRow.id == command_id, now=now, error="cancelled")
    if (await session.scalars(stmt)).first() is None:  # sent meanwhile
        await session.refresh(row)
        raise InvalidTransition(row.status, CommandStatus.CANCELLED)
    await session.refresh(row)
    return row


async def claim(
    session: AsyncSession,
    *,
    device_ids: Sequence[str] | None,
    now: float,
    owner: str,
    require_online: bool = True,
    limit: int = 5000,
) -> list[CommandRow]:
    """queued -> sending for due commands of these devices (all devices when None), in
    creation order. The conditional UPDATE makes each command claimed by one publisher,
    even with several workers and API processes; the caller commits, publishes (QoS 1),
    and on the broker's PUBACK calls :func:`mark_sent`."""
    query = select(CommandRow.id).where(
        _may_become(CommandStatus.SENDING), CommandRow.expires_at >= now
    )
    if device_ids is not None:
        query = query.where(CommandRow.device_id.in_(list(device_ids)))
    if require_online:
        online = select(Device.id).where(Device.status == Presence.ONLINE)
        query = query.where(CommandRow.device_id.in_(online))
    ids = list((await session.scalars(query.limit(limit))).all())
    if not ids:
        return []
    stmt = _move(
        CommandStatus.SENDING, CommandRow.id.in_(ids), now=now, claimed_at=now, claimed_by=owner
    )
    rows = list((await session.scalars(stmt)).all())
    rows.sort(key=lambda r: (r.created_at, r.id))
    return rows


async def mark_sent(
    session: AsyncSession, *, command_ids: Sequence[str], owner: str, now: float
) -> list[CommandRow]:
    """sending -> sent for commands this publisher claimed and the broker acknowledged.
    A command already acked meanwhile, or re-claimed by another publisher after this
    one's claim went stale, is left alone."""
    if not command_ids:
        return []
    acking = CommandRow.device_id.in_(select(Device.id).where(Device.acks.is_(True)))
    stmt = _move(
        CommandStatus.SENT,
        CommandRow.id.in_(list(command_ids)),
        CommandRow.claimed_by == owner,
        now=now,
        sent_at=now,
        # No deadline for a device that never acknowledges: its command stays sent.
        deadline=case((acking, CommandRow.timeout + now), else_=None),
    )
    rows = list((await session.scalars(stmt)).all())
    rows.sort(key=lambda r: (r.created_at, r.id))
    for row in rows:
        if row.deadline is None:
            _note(row, {"note": NO_ACKS, "ts": now})
    return rows


async def release(
    session: AsyncSession,
    *,
    command_ids: Sequence[str],
    owner: str | None,
    now: float,
    reason: str = "publish not confirmed",
) -> list[CommandRow]:
    """sending -> queued: the publish was not confirmed (or, with ``owner`` None, the
    claims are stale: their publisher is presumed dead). The command is published again;
    the device answers a repeat with its first ack."""
    if not command_ids:
        return []
    conditions: list[ColumnElement[bool]] = [CommandRow.id.in_(list(command_ids))]
    if owner is not None:
        conditions.append(CommandRow.claimed_by == owner)
    stmt = _move(CommandStatus.QUEUED, *conditions, now=now, claimed_by=None)
    rows = list((await session.scalars(stmt)).all())
    for row in rows:
        _note(row, {"note": "resend", "ts": now, "reason": reason})
    return rows


def _note(row: CommandRow, note: dict[str, Any]) -> None:
    notes = list(row.history or [])
    if len(notes) < 10:
        notes.append(note)
        row.history = notes


class AckOutcome(StrEnum):
    FINAL = "final"  # acked or failed now
    PROGRESS = "progress"
    DUPLICATE = "duplicate"  # the command already had its final ack
    LATE = "late"  # the command had timed out (or was never sent)
    UNKNOWN = "unknown"  # no such command for this device


async def apply_ack(
    session: AsyncSession, *, device_id: str, ack: Ack, now: float
) -> tuple[AckOutcome, CommandRow | None]:
    """Record a device's ack. Only an ack on the command's own device's topic counts.

    An ack for a command still ``sending`` (the device answered before the publisher saw
    the broker's PUBACK) counts too: the ack proves the command was delivered. Such a
    row comes back with ``deadline`` None (it never was ``sent``)."""
    return await _apply_one(session, device_id, ack, now, None)


async def _apply_one(
    session: AsyncSession, device_id: str, ack: Ack, now: float, acking: set[str] | None
) -> tuple[AckOutcome, CommandRow | None]:
    """:func:`apply_ack`; with ``acking``, the devices to mark as acknowledging are added
    to it rather than marked here (:func:`apply_acks` marks them at the end)."""
    if ack.id is None:
        return AckOutcome.UNKNOWN, None
    mine = (CommandRow.id == ack.id, CommandRow.device_id == device_id)
    if ack.status == "progress":
        # Progress is news about a command that could still end with an ack: no move.
        progress = ack.result if isinstance(ack.result, dict) else {"value": ack.result}
        stmt = (
            update(CommandRow)
            .where(_may_become(CommandStatus.ACKED), *mine)
            .values(progress={**progress, "ts": now})
            .returning(CommandRow)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        row = await _record_ack(session, stmt, device_id, acking)
        if row is not None:
            return AckOutcome.PROGRESS, row
    else:
        ending = ack_ending(ack)
        stmt = _move(
            ending.pop("status"),
            *mine,
            now=now,
            sent_at=func.coalesce(CommandRow.sent_at, now),
            **ending,
        )
        row = await _record_ack(session, stmt, device_id, acking)
        if row is not None:
            return AckOutcome.FINAL, row
    return await _unmatched_ack(session, device_id, ack, now, acking)


async def _unmatched_ack(
    session: AsyncSession, device_id: str, ack: Ack, now: float, acking: set[str] | None
) -> tuple[AckOutcome, CommandRow | None]:
    """An ack that moved nothing: for a command that had already ended, or none of this
    device's."""
    assert ack.id is not None
    existing = await session.get(CommandRow, ack.id)
    if existing is None or existing.device_id != device_id:
        return AckOutcome.UNKNOWN, None
    await _mark_acking(session, device_id, acking)
    if existing.status in (CommandStatus.ACKED, CommandStatus.FAILED):
        return AckOutcome.DUPLICATE, existing
    if existing.status == CommandStatus.TIMED_OUT and ack.status != "progress":
        # The truth: the device did answer, after we gave up. Kept as a note.
        _note(existing, {"note": "late_ack", "ts": now, "status": ack.status, "error": ack.error})
    return AckOutcome.LATE, existing


# Below this many final acks, :func:`apply_acks` records them one statement each.
FEW_ACKS = 4


async def apply_acks(
    session: AsyncSession, acks: Sequence[tuple[str, Ack, float]]
) -> list[tuple[AckOutcome, CommandRow | None]]:
    """Record many acks (device id, ack, time received), each as :func:`apply_ack` would,
    with the final acks of distinct commands in one UPDATE: a burst of answers (a bulk
    command's thousand) costs one statement, not one each. The results are in the order
    of ``acks``."""
    seen = Counter(ack.id for _device, ack, _now in acks)
    finals = {
        item[1].id: item
        for item in acks
        if item[1].id is not None and item[1].status != "progress" and seen[item[1].id] == 1
    }
    if len(finals) < FEW_ACKS:
        # The one-ack statement is compiled once and cached; the many-rows one is
        # compiled for each call, which only pays off when it ends many commands.
        return [
            await apply_ack(session, device_id=device_id, ack=ack, now=now)
            for device_id, ack, now in acks
        ]
    # Devices marked acknowledging once, at the end, in one statement: marked one by one
    # between the commands, two calls at once could lock a command and a device each in
    # the other's order (a deadlock).
    acking: set[str] = set()
    ended = await _end_many(session, list(finals.values()))
    out: list[tuple[AckOutcome, CommandRow | None]] = []
    for device_id, ack, now in acks:
        if ack.id is None or ack.id not in finals:
            # Progress, and every ack of a command the call holds more than once: one at
            # a time, in order.
            out.append(await _apply_one(session, device_id, ack, now, acking))
            continue
        hit = ended.get(ack.id)
        if hit is None:
            out.append(await _unmatched_ack(session, device_id, ack, now, acking))
            continue
        row, known = hit
        if not known:
            acking.add(device_id)
        out.append((AckOutcome.FINAL, row))
    if acking:
        await session.execute(
            update(Device)
            .where(Device.id.in_(sorted(acking)), Device.acks.is_(False))
            .values(acks=True)
            .execution_options(synchronize_session=False)
        )
    return out


async def _end_many(
    session: AsyncSession, acks: list[tuple[str, Ack, float]]
) -> dict[str, tuple[CommandRow, bool]]:
    """One UPDATE ending every command one of ``acks`` (final, distinct ids) ends: the
    commands moved, each with whether its device was already known to acknowledge."""
    if not acks:
        return {}
    endings = [(device_id, ack, now, ack_ending(ack)) for device_id, ack, now in acks]
    rows = values(
        column("id", String),
        column("device_id", String),
        column("status", String),
        column("now", Float),
        column("result", JsonType),
        column("error", Text),
        name="answers",
    ).data(
        [
            (ack.id, device_id, ending["status"].value, now, ending["result"], ending["error"])
            for device_id, ack, now, ending in endings
        ]
    )
    # A CTE: SQLite cannot name the columns of a VALUES list in FROM, but can a CTE's.
    answers = rows.cte("answers")
    acking = select(Device.acks).where(Device.id == CommandRow.device_id).scalar_subquery()
    # Acked and failed are entered from the same statuses: one condition serves both.
    assert sources(CommandStatus.ACKED) == sources(CommandStatus.FAILED)
    stmt = cast(
        "ReturningUpdate[CommandRow, bool]",
        update(CommandRow)
        .where(
            CommandRow.id == answers.c.id,
            CommandRow.device_id == answers.c.device_id,
            _may_become(CommandStatus.ACKED),
        )
        .values(
            status=answers.c.status,
            finished_at=answers.c.now,
            secret_params=None,
            sent_at=func.coalesce(CommandRow.sent_at, answers.c.now),
            result=answers.c.result,
            error=answers.c.error,
        )
        .returning(CommandRow, acking)
        .execution_options(synchronize_session=False, populate_existing=True),
    )
    return {row.id: (row, flag) for row, flag in (await session.execute(stmt)).all()}


async def _record_ack(
    session: AsyncSession,
    stmt: ReturningUpdate[CommandRow],
    device_id: str,
    acking: set[str] | None,
) -> CommandRow | None:
    """Run the UPDATE that records an ack; the device becomes acking if it was not. The
    flag is read in the same statement: it is set once, so most acks write nothing more."""
    acks = select(Device.acks).where(Device.id == CommandRow.device_id).scalar_subquery()
    both = cast("ReturningUpdate[CommandRow, bool]", stmt.returning(acks))
    found = (await session.execute(both)).first()
    if found is None:
        return None
    row, known = found
    if not known:
        await _mark_acking(session, device_id, acking)
    return row


async def _mark_acking(session: AsyncSession, device_id: str, acking: set[str] | None) -> None:
    if acking is None:
        await _acks(session, device_id)
    else:
        acking.add(device_id)


async def _acks(session: AsyncSession, device_id: str) -> None:
    """The device acknowledged one of its commands: from now on it is treated as acking."""
    await session.execute(
        update(Device)
        .where(Device.id == device_id, Device.acks.is_(False))
        .values(acks=True)
        .execution_options(synchronize_session=False)
    )


# Commands one sweep moves per kind at most; a sweep that hits it runs again at once.
SWEEP_LIMIT = 5_000


async def _lock_for_sweep(
    session: AsyncSession, new: CommandStatus, *conditions: ColumnElement[bool]
) -> list[str]:
    """The ids of commands the sweep may move to ``new``, locked for this transaction.
    Rows another transaction holds (an ack being recorded, a publish being confirmed) are
    skipped, not waited for: they are changing anyway, and a later sweep sees them if they
    still qualify. Waiting could deadlock: the sweep's one UPDATE and a batch of acks
    would each lock many rows, in different orders. (SQLite locks the whole database
    instead, and ignores the clause.)"""
    stmt = (
        select(CommandRow.id)
        .where(_may_become(new), *conditions)
        .order_by(CommandRow.id)
        .limit(SWEEP_LIMIT)
        .with_for_update(skip_locked=True)
    )
    return list((await session.scalars(stmt)).all())


async def sweep(session: AsyncSession, *, now: float) -> list[CommandRow]:
    """sent -> timed_out past the deadline; queued -> expired past the TTL; stale
    sending claims (their publisher died) -> queued, to be published again."""
    stale_ids = await _lock_for_sweep(
        session, CommandStatus.QUEUED, CommandRow.claimed_at < now - CLAIM_TIMEOUT
    )
    stale = await release(
        session, command_ids=stale_ids, owner=None, now=now, reason="publisher lost"
    )
    rows: list[CommandRow] = []
    for new, overdue, error in (
        (
            CommandStatus.TIMED_OUT,
            CommandRow.deadline < now,
            "no final ack from the device before the timeout",
        ),
        (
            CommandStatus.EXPIRED,
            CommandRow.expires_at < now,
            "device was not online before the command's ttl ran out",
        ),
    ):
        ids = await _lock_for_sweep(session, new, overdue)
        if ids:
            moved = _move(new, CommandRow.id.in_(ids), now=now, error=error)
            rows += list((await session.scalars(moved)).all())
    return stale + rows


async def next_deadline(session: AsyncSession) -> float | None:
    """The earliest moment a sweep could change something."""
    sent = await session.scalar(
        select(CommandRow.deadline)
        .where(_may_become(CommandStatus.TIMED_OUT), CommandRow.deadline.is_not(None))
        .order_by(CommandRow.deadline)
        .limit(1)
    )
    queued = await session.scalar(
        select(CommandRow.expires_at)
        .where(_may_become(CommandStatus.EXPIRED))
        .order_by(CommandRow.expires_at)
        .limit(1)
    )
    claimed = await session.scalar(
        select(CommandRow.claimed_at)
        .where(_may_become(CommandStatus.QUEUED))
        .order_by(CommandRow.claimed_at)
        .limit(1)
    )
    if claimed is not None:
        claimed += CLAIM_TIMEOUT
    candidates = [t for t in (sent, queued, claimed) if t is not None]
    return min(candidates) if candidates else None


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    """How many commands are in each status (statuses with none are left out)."""
    rows = await session.execute(
        select(CommandRow.status, func.count()).group_by(CommandRow.status)
    )
    return {status: int(n) for status, n in rows.all()}

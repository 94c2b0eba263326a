"""Device shadow: desired state (set through the API) against reported state (the
device's retained ``state`` message), the delta between them, and the commands that
close it. The platform reconciles when the desired state changes, when the device
comes online and when it reports a new state; the desired state wins, so a key a
user wants the device to control itself (automation) is left out of desired."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.models import CommandRow, Device, DeviceShadow
from iotp.errors import InvalidRequestError, NotFoundError
from iotp.protocol.events import CommandStatus, Presence, PublishEvent
from iotp.services import commands as command_service

SHADOW_KEYS = ("relays", "servo", "automation", "config")
CONFIG_KEYS = ("interval",)  # the config keys a device reports back in its state
MAX_ATTEMPTS = 3
_IDS_PER_QUERY = 1000  # well under either database's limit on bound parameters
SHADOW_COMMAND_TIMEOUT = 10.0
SHADOW_COMMAND_TTL = 30.0


def validate_desired(desired: dict[str, Any], capabilities: list[str]) -> dict[str, Any]:
    """Check a desired document; returns it without null leaves (null = not wanted)."""
    if not isinstance(desired, dict):
        raise InvalidRequestError("desired must be an object")
    unknown = sorted(set(desired) - set(SHADOW_KEYS))
    if unknown:
        raise InvalidRequestError(
            f"desired: unknown key(s) {unknown}; supported: {list(SHADOW_KEYS)}"
        )
    out: dict[str, Any] = {}
    relays = desired.get("relays")
    if relays is not None:
        if not isinstance(relays, dict):
            raise InvalidRequestError("desired.relays must be an object of name: true/false")
        names = command_service.relay_names(capabilities)
        for name, value in relays.items():
            if name not in names:
                raise InvalidRequestError(
                    f"desired.relays: device has no relay {name!r} (its relays: {names or 'none'})"
                )
            if value is not None and not isinstance(value, bool):
                raise InvalidRequestError(f"desired.relays.{name} must be true, false or null")
        kept = {k: v for k, v in relays.items() if v is not None}
        if kept:
            out["relays"] = kept
    servo = desired.get("servo")
    if servo is not None:
        if "servo" not in capabilities:
            raise InvalidRequestError("desired.servo: device does not have capability 'servo'")
        command_service.validate("servo", {"angle": servo}, capabilities)
        out["servo"] = int(servo)
    automation = desired.get("automation")
    if automation is not None:
        if "automation" not in capabilities:
            raise InvalidRequestError(
                "desired.automation: device does not have capability 'automation'"
            )
        if not isinstance(automation, dict):
            raise InvalidRequestError("desired.automation must be an object")
        kept = {k: v for k, v in automation.items() if v is not None}
        if kept:
            command_service.validate_automation(kept, "desired.automation")
            out["automation"] = kept
    config = desired.get("config")
    if config is not None:
        if not isinstance(config, dict):
            raise InvalidRequestError("desired.config must be an object")
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise InvalidRequestError(
                f"desired.config: unsupported key(s) {unknown}; supported: {list(CONFIG_KEYS)} "
                "(other settings: send a set_config command)"
            )
        kept = {k: v for k, v in config.items() if v is not None}
        if kept:
            command_service.validate("set_config", kept, capabilities)
            out["config"] = kept
    return out


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch: null removes a key."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out


def _same(want: Any, have: Any) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    if isinstance(want, int | float) and isinstance(have, int | float):
        return math.isclose(float(want), float(have), rel_tol=1e-9, abs_tol=1e-9)
    if want in (None, "") and have in (None, ""):
        return True
    return bool(want == have)


def delta(desired: dict[str, Any], reported: dict[str, Any] | None) -> dict[str, Any]:
    """The part of desired that reported does not match yet."""
    reported = reported or {}
    out: dict[str, Any] = {}
    for key, want in desired.items():
        have = reported.get(key)
        if isinstance(want, dict):
            have_d = have if isinstance(have, dict) else {}
            diff = {k: v for k, v in want.items() if k not in have_d or not _same(v, have_d[k])}
            if diff:
                out[key] = diff
        elif not _same(want, have):
            out[key] = want
    return out


def commands_for(diff: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The commands that close a delta."""
    out: list[tuple[str, dict[str, Any]]] = []
    for name, on in sorted((diff.get("relays") or {}).items()):
        out.append(("relay", {"name": name, "state": "on" if on else "off"}))
    if "servo" in diff:
        out.append(("servo", {"angle": diff["servo"]}))
    if diff.get("automation"):
        out.append(("automation", dict(diff["automation"])))
    if diff.get("config"):
        out.append(("set_config", dict(diff["config"])))
    return out


def view(device: Device, shadow: DeviceShadow | None) -> dict[str, Any]:
    desired = shadow.desired if shadow is not None else {}
    diff = delta(desired, device.reported_state)
    return {
        "device_id": device.id,
        "desired": desired,
        "reported": device.reported_state or {},
        "delta": diff,
        "in_sync": not diff,
        "version": shadow.version if shadow is not None else 0,
        "updated_at": shadow.updated_at if shadow is not None else None,
        "attempts": shadow.attempts if shadow is not None else 0,
        "last_error": shadow.last_error if shadow is not None else None,
    }


async def get(session: AsyncSession, *, device_id: str) -> dict[str, Any]:
    device = await session.get(Device, device_id)
    if device is None:
        raise NotFoundError("device", device_id)
    return view(device, await session.get(DeviceShadow, device_id))


async def set_desired(
    session: AsyncSession, *, device_id: str, desired: dict[str, Any], merge: bool
) -> dict[str, Any]:
    device = await session.get(Device, device_id)
    if device is None:
        raise NotFoundError("device", device_id)
    shadow = await session.get(DeviceShadow, device_id)
    current = shadow.desired if shadow is not None else {}
    document = merge_patch(current, desired) if merge else desired
    checked = validate_desired(document, device.capabilities or [])
    now = time.time()
    if shadow is None:
        shadow = DeviceShadow(device_id=device_id, desired=checked, version=1, updated_at=now)
        session.add(shadow)
    else:
        shadow.desired = checked
        shadow.version += 1
        shadow.updated_at = now
    shadow.attempts = 0
    shadow.last_error = None
    await session.flush()
    return view(device, shadow)


async def with_desired(session: AsyncSession, device_ids: Sequence[str]) -> set[str]:
    """Those of ``device_ids`` whose shadow wants something: the only ones a
    reconciliation can act on (one query for a fleet coming online, not one each)."""
    found: set[str] = set()
    for i in range(0, len(device_ids), _IDS_PER_QUERY):
        chunk = list(device_ids[i : i + _IDS_PER_QUERY])
        rows = await session.execute(
            select(DeviceShadow.device_id, DeviceShadow.desired).where(
                DeviceShadow.device_id.in_(chunk)
            )
        )
        found.update(device_id for device_id, desired in rows.all() if desired)
    return found


async def reconcile(
    session: AsyncSession,
    *,
    device_id: str,
    online: bool,
    now: float,
    publish_event: PublishEvent,
) -> list[CommandRow]:
    """Queue the commands that close the delta (none while earlier ones are in flight),
    issued as every command is (:func:`iotp.services.commands.issue`); the caller commits
    and asks for their dispatch. ``online``: the caller knows the device is online (its
    DB status may lag)."""
    shadow = await session.get(DeviceShadow, device_id)
    if shadow is None or not shadow.desired:
        return []
    device = await session.get(Device, device_id)
    if device is None or not (online or device.status == Presence.ONLINE):
        return []
    diff = delta(shadow.desired, device.reported_state)
    if not diff:
        if shadow.attempts:
            shadow.attempts = 0
            shadow.last_error = None
        return []
    in_flight = await session.scalar(
        select(CommandRow.id)
        .where(
            CommandRow.device_id == device_id,
            CommandRow.source == "shadow",
            CommandRow.status.in_(
                [
                    CommandStatus.QUEUED,
                    CommandStatus.SENDING,
                    CommandStatus.SENT,
                ]
            ),
        )
        .limit(1)
    )
    if in_flight is not None:
        return []
    if shadow.attempts >= MAX_ATTEMPTS:
        if not shadow.last_error or not shadow.last_error.startswith("gave up"):
            shadow.last_error = (
                f"gave up after {MAX_ATTEMPTS} attempts: the device still reports "
                f"{sorted(diff)} different from desired"
                + (f" (last error: {shadow.last_error})" if shadow.last_error else "")
            )
        return []
    shadow.attempts += 1
    rows: list[CommandRow] = []
    for command, params in commands_for(diff):
        try:
            row = await command_service.issue(
                session,
                device=device,
                command=command,
                params=params,
                ack_timeout=SHADOW_COMMAND_TIMEOUT,
                ttl=SHADOW_COMMAND_TTL,
                now=now,
                source="shadow",
                publish_event=publish_event,
            )
        except InvalidRequestError as exc:  # the device no longer has what desired needs
            shadow.last_error = f"{command}: {exc}"[:500]
            continue
        rows.append(row)
    await session.flush()
    return rows


async def note_error(session: AsyncSession, *, device_id: str, error: str) -> None:
    """Keep the reason the last shadow command failed (shown as ``last_error``)."""
    shadow = await session.get(DeviceShadow, device_id)
    if shadow is not None:
        shadow.last_error = error[:500]

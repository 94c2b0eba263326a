"""Device registry: registration from the protocol, queries and edits for the API."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.auth_models import DeviceCredential
from iotp.db.models import (
    CommandRow,
    Device,
    DeviceEventRow,
    DeviceShadow,
    RolloutDevice,
    TelemetryRollupHour,
    TelemetryRollupMinute,
)
from iotp.errors import NotFoundError
from iotp.protocol import DeviceInfo
from iotp.services import telemetry


def default_name(device_id: str) -> str:
    return f"ESP32-{device_id[-6:]}"


def info_fields(info: DeviceInfo) -> dict[str, Any]:
    """Columns that an ``info`` message sets (only what the device actually sent)."""
    sent = info.model_fields_set
    fields: dict[str, Any] = {"protocol": info.protocol, "acks": True}
    if "type" in sent:
        fields["type"] = info.type
    if "firmware" in sent:
        fields["firmware_version"] = info.firmware
    if "capabilities" in sent:
        fields["capabilities"] = list(info.capabilities)
    if "ip" in sent:
        fields["ip"] = info.ip
    if "rssi" in sent:
        fields["rssi"] = info.rssi
    if "interval" in sent:
        fields["report_interval"] = info.interval
    if "units" in sent:
        fields["units"] = dict(info.units)
    extra = info.extra
    if extra:
        fields["meta"] = extra
    return fields


def describes(info: DeviceInfo) -> bool:
    """Whether this info makes the device's capabilities known: it lists capabilities or
    names a firmware (the rule of iotp.services.commands.known_capabilities)."""
    sent = info.model_fields_set
    return bool("capabilities" in sent and info.capabilities) or (
        "firmware" in sent and info.firmware is not None
    )


# As many as an info may list (protocol: <= 64 capabilities).
MAX_LEARNED = 64
_CAPABILITY_MAX_CHARS = 64


def capabilities_in_data(metrics: dict[str, float]) -> set[str]:
    """The sensor capabilities a data message shows: its metric names."""
    return {name for name in metrics if len(name) <= _CAPABILITY_MAX_CHARS}


def capabilities_in_state(state: dict[str, Any]) -> set[str]:
    """The actuators a reported state shows: ``relay:<name>`` for each of its relays, and
    ``servo`` for a servo angle (docs/protocol.md, devices/{id}/state)."""
    caps: set[str] = set()
    relays = state.get("relays")
    if isinstance(relays, dict):
        caps.update(
            f"relay:{name}"
            for name in relays
            if isinstance(name, str) and 0 < len(name) <= _CAPABILITY_MAX_CHARS - len("relay:")
        )
    servo = state.get("servo")
    if isinstance(servo, int | float) and not isinstance(servo, bool):
        caps.add("servo")
    return caps


async def learn_capabilities(
    session: AsyncSession, *, device_id: str, capabilities: set[str]
) -> list[str] | None:
    """Add to what a device without info has shown it has. Returns its learned
    capabilities when this added any, else None (nothing new, the device described
    itself meanwhile, or it is gone). The row is locked (PostgreSQL) so that workers
    learning different things of one device at once both keep theirs."""
    row = (
        await session.execute(
            select(Device.capabilities, Device.firmware_version, Device.learned_capabilities)
            .where(Device.id == device_id)
            .with_for_update()
        )
    ).one_or_none()
    if row is None:
        return None
    caps, firmware, learned = row
    if caps or firmware is not None:
        return None
    have = set(learned or [])
    add = sorted(capabilities - have)[: max(0, MAX_LEARNED - len(have))]
    if not add:
        return None
    new = sorted(have | set(add))
    await session.execute(
        update(Device).where(Device.id == device_id).values(learned_capabilities=new)
    )
    return new


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A device seen for the first time (by its first message)."""

    device_id: str
    now: float
    info: DeviceInfo | None = None


@dataclass(frozen=True, slots=True)
class Registered:
    """A device that a registration actually created (announced as device_registered)."""

    device_id: str
    name: str
    type: str | None
    capabilities: list[str]
    first_seen: float
    units: dict[str, str] | None = None  # as declared by a first info message


async def register_many(session: AsyncSession, new: Sequence[NewDevice]) -> list[Registered]:
    """Create the devices that do not exist yet, in one INSERT ... ON CONFLICT DO NOTHING
    RETURNING, and a ``registered`` event for each. Returns only the devices this call
    created: when several workers register the same device at once, exactly one of them
    gets it back (the others' inserts do nothing, no error, no rollback). Rows are
    inserted in id order, so two workers registering overlapping sets lock rows in one
    order and never deadlock."""
    by_id: dict[str, NewDevice] = {}
    for n in new:
        by_id.setdefault(n.device_id, n)  # the first sighting wins
    if not by_id:
        return []
    rows = [_device_row(by_id[device_id]) for device_id in sorted(by_id)]
    table = cast(Table, Device.__table__)
    dialect = session.get_bind().dialect.name
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = (
        insert_(table)
        .on_conflict_do_nothing(index_elements=[table.c.id])
        .returning(table.c.id, table.c.name, table.c.type, table.c.capabilities, table.c.units)
    )
    result = await session.execute(stmt, rows)
    created = {
        device_id: Registered(device_id, name, type_, list(caps or []), by_id[device_id].now, units)
        for device_id, name, type_, caps, units in result.all()
    }
    if not created:
        return []
    out = [created[device_id] for device_id in sorted(created)]
    await session.execute(
        insert(DeviceEventRow),
        [
            {"device_id": r.device_id, "ts": r.first_seen, "type": "registered", "data": {}}
            for r in out
        ],
    )
    return out


def _device_row(n: NewDevice) -> dict[str, Any]:
    """Every column (one shape for all rows of the statement), by column name."""
    info = n.info
    row: dict[str, Any] = {
        "id": n.device_id,
        "name": info.name if info is not None and info.name else default_name(n.device_id),
        "type": None,
        "capabilities": [],
        "firmware_version": None,
        "protocol": 1,
        "ip": None,
        "rssi": None,
        "report_interval": None,
        "status": "unknown",
        "status_changed_at": None,
        "first_seen": n.now,
        "last_seen": n.now,
        "notes": "",
        "tags": [],
        "meta": {},
        "reported_state": None,
        "units": None,
        "learned_capabilities": None,
        "acks": False,
    }
    if info is not None:
        row.update(info_fields(info))
    row["metadata"] = row.pop("meta")  # the column's name (attribute ``meta``)
    return row


async def register(
    session: AsyncSession, *, device_id: str, now: float, info: DeviceInfo | None = None
) -> Device | None:
    """Create the device if it does not exist. Returns the new row, or None if it existed."""
    created = await register_many(session, [NewDevice(device_id, now, info)])
    if not created:
        return None
    return await session.get(Device, device_id)


async def apply_info(session: AsyncSession, *, device_id: str, info: DeviceInfo) -> None:
    await session.execute(update(Device).where(Device.id == device_id).values(**info_fields(info)))


async def set_status(
    session: AsyncSession, *, device_id: str, status: str, reason: str, now: float, old: str
) -> None:
    await session.execute(
        update(Device).where(Device.id == device_id).values(status=status, status_changed_at=now)
    )
    session.add(
        DeviceEventRow(
            device_id=device_id,
            ts=now,
            type="status",
            data={"status": status, "previous": old, "reason": reason},
        )
    )


async def set_reported_state(
    session: AsyncSession, *, device_id: str, state: dict[str, Any]
) -> None:
    await session.execute(update(Device).where(Device.id == device_id).values(reported_state=state))


async def add_event(
    session: AsyncSession, *, device_id: str, ts: float, type_: str, data: dict[str, Any]
) -> None:
    session.add(DeviceEventRow(device_id=device_id, ts=ts, type=type_, data=data))


async def touch_last_seen(session: AsyncSession, seen: Sequence[tuple[str, float]]) -> None:
    if not seen:
        return
    await session.execute(
        update(Device),
        [{"id": device_id, "last_seen": ts} for device_id, ts in seen],
    )


async def get(session: AsyncSession, device_id: str) -> Device:
    device = await session.get(Device, device_id)
    if device is None:
        raise NotFoundError("device", device_id)
    return device


async def list_devices(
    session: AsyncSession,
    *,
    status: str | None = None,
    type_: str | None = None,
    search: str | None = None,
    tag: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[Device], int]:
    """One page of the devices that match, oldest first, and how many match in all:
    counted and paged by the database, so a page of a large fleet reads only that page."""
    conditions: list[ColumnElement[bool]] = []
    if status:
        conditions.append(Device.status == status)
    if type_:
        conditions.append(Device.type == type_)
    if search:
        like = f"%{search.lower()}%"
        conditions.append(or_(func.lower(Device.name).like(like), func.lower(Device.id).like(like)))
    if tag:
        conditions.append(_has_tag(session, tag))
    total = await session.scalar(select(func.count()).select_from(Device).where(*conditions))
    query = select(Device).where(*conditions).order_by(Device.first_seen, Device.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list((await session.scalars(query)).all()), int(total or 0)


def _has_tag(session: AsyncSession, tag: str) -> ColumnElement[bool]:
    """Whether a device's tags (a JSON list) hold ``tag``."""
    if session.get_bind().dialect.name == "postgresql":
        return type_coerce(Device.tags, JSONB).contains([tag])
    each = func.json_each(Device.tags).table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value == tag))


async def update_device(
    session: AsyncSession,
    *,
    device_id: str,
    name: str | None = None,
    notes: str | None = None,
    tags: list[str] | None = None,
) -> Device:
    device = await get(session, device_id)
    if name is not None:
        device.name = name
    if notes is not None:
        device.notes = notes
    if tags is not None:
        device.tags = sorted(set(tags))
    await session.flush()
    return device


async def delete_device(session: AsyncSession, *, device_id: str) -> None:
    """The device and everything that is only about it: events, telemetry and its
    rollups, commands (whatever their state: a late ack is then counted as unknown),
    shadow, rollout targets and MQTT credentials (the brokers drop the account). Alerts
    and webhook deliveries stay, as history of what happened."""
    await get(session, device_id)
    await session.execute(delete(DeviceEventRow).where(DeviceEventRow.device_id == device_id))
    await telemetry.delete_device_telemetry(await session.connection(), device_id)
    for table in (TelemetryRollupMinute, TelemetryRollupHour):
        await session.execute(delete(table).where(table.device_id == device_id))
    await session.execute(delete(CommandRow).where(CommandRow.device_id == device_id))
    await session.execute(delete(DeviceShadow).where(DeviceShadow.device_id == device_id))
    await session.execute(delete(RolloutDevice).where(RolloutDevice.device_id == device_id))
    await session.execute(delete(DeviceCredential).where(DeviceCredential.device_id == device_id))
    await session.execute(delete(Device).where(Device.id == device_id))


async def list_events(
    session: AsyncSession, *, device_id: str, limit: int = 100, before: float | None = None
) -> list[DeviceEventRow]:
    query = select(DeviceEventRow).where(DeviceEventRow.device_id == device_id)
    if before is not None:
        query = query.where(DeviceEventRow.ts < before)
    query = query.order_by(DeviceEventRow.ts.desc(), DeviceEventRow.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Device.status, func.count()).group_by(Device.status))
    return {status: int(n) for status, n in rows.all()}


def now() -> float:
    return time.time()

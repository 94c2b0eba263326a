"""Groups of devices: tags (devices.tags) and the device selector that commands and
rollouts use to target many devices at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.models import Device
from iotp.errors import InvalidRequestError
from iotp.protocol.events import Presence
from iotp.protocol.payloads import NAME_RE

MAX_SELECTOR_DEVICES = 10_000


@dataclass(frozen=True)
class Selector:
    """Devices matching every given criterion. ``all=True`` must be said explicitly to
    target the whole fleet, so an empty selector never does by accident."""

    devices: list[str] = field(default_factory=list)
    type: str | None = None
    tags: list[str] = field(default_factory=list)
    all: bool = False
    online_only: bool = False

    def check(self) -> None:
        if not (self.devices or self.type or self.tags or self.all):
            raise InvalidRequestError("selector must name devices, a type, tags, or set all: true")
        if len(self.devices) > MAX_SELECTOR_DEVICES:
            raise InvalidRequestError(f"selector: at most {MAX_SELECTOR_DEVICES} device ids")
        for tag in self.tags:
            if NAME_RE.fullmatch(tag) is None:
                raise InvalidRequestError(f"selector: bad tag {tag!r}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "devices": list(self.devices),
            "type": self.type,
            "tags": list(self.tags),
            "all": self.all,
            "online_only": self.online_only,
        }


async def resolve(session: AsyncSession, selector: Selector) -> tuple[list[Device], list[str]]:
    """(matching devices, requested ids that do not exist)."""
    selector.check()
    query = select(Device)
    if selector.devices:
        query = query.where(Device.id.in_(selector.devices))
    if selector.type:
        query = query.where(Device.type == selector.type)
    if selector.online_only:
        query = query.where(Device.status == Presence.ONLINE)
    devices = list((await session.scalars(query.order_by(Device.id))).all())
    if selector.tags:
        wanted = set(selector.tags)
        # Tags are a small JSON list; filtering in Python keeps SQLite and PostgreSQL alike.
        devices = [d for d in devices if wanted <= set(d.tags or [])]
    missing: list[str] = []
    if selector.devices:
        known = set(
            (await session.scalars(select(Device.id).where(Device.id.in_(selector.devices)))).all()
        )
        missing = [d for d in dict.fromkeys(selector.devices) if d not in known]
    return devices, missing


async def list_tags(session: AsyncSession) -> dict[str, int]:
    counts: dict[str, int] = {}
    for tags in (await session.scalars(select(Device.tags))).all():
        for tag in tags or []:
            counts[tag] = counts.get(tag, 0) + 1
    return dict(sorted(counts.items()))


async def tag_devices(
    session: AsyncSession, *, tag: str, add: list[str], remove: list[str]
) -> tuple[int, list[str]]:
    """Add/remove one tag on many devices. Returns (devices changed, unknown ids)."""
    if NAME_RE.fullmatch(tag) is None:
        raise InvalidRequestError(f"tag {tag!r} must match {NAME_RE.pattern}")
    ids = list(dict.fromkeys([*add, *remove]))
    rows = {d.id: d for d in (await session.scalars(select(Device).where(Device.id.in_(ids))))}
    changed = 0
    for device_id in add:
        device = rows.get(device_id)
        if device is not None and tag not in (device.tags or []):
            device.tags = sorted({*(device.tags or []), tag})
            changed += 1
    for device_id in remove:
        device = rows.get(device_id)
        if device is not None and tag in (device.tags or []):
            device.tags = [t for t in device.tags if t != tag]
            changed += 1
    await session.flush()
    return changed, [d for d in ids if d not in rows]

"""The shadow's commands on a real database: issued the one way every command is
(services.commands.issue), announced at the commit, none while one is in flight, and a
desired state the device can no longer take becomes the shadow's error."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from iotp.db.models import Device, DeviceShadow
from iotp.protocol.events import CommandStatus
from iotp.services import shadow

NOW = 1_800_000_000.0
DEVICE = "ESP32-SHADOW"


class Events(list[tuple[str, str, dict[str, Any], float]]):
    def __call__(self, kind: str, device_id: str, payload: dict[str, Any], ts: float) -> None:
        self.append((kind, device_id, payload, ts))


async def _device(session: AsyncSession) -> Device:
    device = Device(
        id=DEVICE,
        name=DEVICE,
        capabilities=["relay:light"],
        firmware_version="1.0.0",
        status="online",
        first_seen=NOW,
        reported_state={"relays": {"light": False}},
    )
    session.add(device)
    await session.commit()
    return device


async def test_the_delta_becomes_one_command_announced_at_the_commit(
    session: AsyncSession,
) -> None:
    await _device(session)
    await shadow.set_desired(
        session, device_id=DEVICE, desired={"relays": {"light": True}}, merge=False
    )
    await session.commit()
    events = Events()
    rows = await shadow.reconcile(
        session, device_id=DEVICE, online=True, now=NOW, publish_event=events
    )
    assert [(r.command, r.params, r.source) for r in rows] == [
        ("relay", {"name": "light", "state": "on"}, "shadow")
    ]
    assert events == []
    await session.commit()
    assert [(p["id"], p["status"]) for _, _, p, _ in events] == [(rows[0].id, CommandStatus.QUEUED)]
    # While that command is in flight, nothing more is queued.
    assert (
        await shadow.reconcile(
            session, device_id=DEVICE, online=True, now=NOW + 1, publish_event=events
        )
        == []
    )
    await session.commit()
    assert len(events) == 1


async def test_a_desired_state_the_device_cannot_take_is_the_shadows_error(
    session: AsyncSession,
) -> None:
    device = await _device(session)
    await shadow.set_desired(
        session, device_id=DEVICE, desired={"relays": {"light": True}}, merge=False
    )
    device.capabilities = []  # its new firmware has no relay any more
    await session.commit()
    events = Events()
    rows = await shadow.reconcile(
        session, device_id=DEVICE, online=True, now=NOW, publish_event=events
    )
    await session.commit()
    assert rows == []
    assert events == []
    row = await session.get(DeviceShadow, DEVICE, populate_existing=True)
    assert row is not None
    assert row.last_error is not None
    assert "relay" in row.last_error
    assert "light" in row.last_error


async def test_only_devices_whose_shadow_wants_something_are_reconciled(
    session: AsyncSession,
) -> None:
    ids = [f"ESP32-{i:04d}" for i in range(1205)]  # more than one query's worth
    for i, device_id in enumerate(ids):
        session.add(Device(id=device_id, name=device_id, first_seen=NOW))
        if i % 400 in (7, 8):  # wanting something, and wanting nothing
            desired: dict[str, Any] = {"relays": {"x": True}} if i % 400 == 7 else {}
            session.add(DeviceShadow(device_id=device_id, desired=desired, updated_at=NOW))
    await session.commit()
    wanting = await shadow.with_desired(session, [*ids, "ESP32-GHOST"])
    assert wanting == {ids[i] for i in (7, 407, 807)}

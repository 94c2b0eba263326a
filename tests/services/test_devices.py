"""Device registration on a real database: a device is created once, however many
workers see it first at the same time; a first info message fills in what it sent, and
a later one changes only what it sends."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotp.db.models import Device, DeviceEventRow
from iotp.protocol import DeviceInfo
from iotp.services import devices
from iotp.services.devices import NewDevice

NOW = 1_800_000_000.0


async def _registered_events(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(DeviceEventRow.device_id, func.count())
        .where(DeviceEventRow.type == "registered")
        .group_by(DeviceEventRow.device_id)
    )
    return {device_id: int(n) for device_id, n in rows.all()}


async def test_workers_registering_the_same_devices_at_once_create_each_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Two workers of a share group met overlapping devices first: each device is
    created by exactly one of them, which alone announces it."""
    ids = [f"ESP32-{i:04d}" for i in range(12)]
    first, second = ids[:8], ids[4:]

    async def worker(seen: list[str], now: float) -> list[str]:
        async with sessions() as session:
            created = await devices.register_many(
                session, [NewDevice(device_id, now) for device_id in reversed(seen)]
            )
            await session.commit()
            return [r.device_id for r in created]

    got = await asyncio.gather(worker(first, NOW), worker(second, NOW + 1))
    assert sorted(got[0] + got[1]) == ids  # every device, none twice
    assert set(got[0]) >= set(ids[:4])
    assert set(got[1]) >= set(ids[8:])
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Device)) == len(ids)
        assert await _registered_events(session) == dict.fromkeys(ids, 1)
        # Whoever created a device gave it its own first sighting.
        for index, created in enumerate(got):
            for device_id in created:
                device = await devices.get(session, device_id)
                assert device.first_seen == NOW + index


async def test_a_device_already_known_is_not_registered_again(session: AsyncSession) -> None:
    created = await devices.register_many(
        session,
        [NewDevice("ESP32-A", NOW), NewDevice("ESP32-B", NOW), NewDevice("ESP32-A", NOW + 5)],
    )
    await session.commit()
    # The first sighting in one batch wins.
    assert [(r.device_id, r.first_seen) for r in created] == [("ESP32-A", NOW), ("ESP32-B", NOW)]
    assert await devices.register(session, device_id="ESP32-A", now=NOW + 10) is None
    assert await devices.register_many(session, [NewDevice("ESP32-B", NOW + 10)]) == []
    await session.commit()
    assert await _registered_events(session) == {"ESP32-A": 1, "ESP32-B": 1}
    assert (await devices.get(session, "ESP32-A")).first_seen == NOW


async def test_a_first_info_fills_in_what_it_sent(session: AsyncSession) -> None:
    info = DeviceInfo.model_validate(
        {
            "type": "esp32-env",
            "firmware": "1.4.0",
            "capabilities": ["temperature", "relay:fan"],
            "name": "Greenhouse",
            "units": {"temperature": "°C"},
            "board": "devkit-v1",  # not a field of its own: kept as metadata
        }
    )
    created = await devices.register_many(session, [NewDevice("ESP32-INFO", NOW, info)])
    await session.commit()
    assert [(r.name, r.type, r.capabilities, r.units) for r in created] == [
        ("Greenhouse", "esp32-env", ["temperature", "relay:fan"], {"temperature": "°C"})
    ]
    device = await devices.get(session, "ESP32-INFO")
    assert (device.firmware_version, device.acks, device.meta) == (
        "1.4.0",
        True,
        {"board": "devkit-v1"},
    )
    assert device.ip is None
    assert device.report_interval is None

    # Without an info message: the default name, nothing known yet, no acks assumed.
    await devices.register(session, device_id="A4CF12B3C4D5", now=NOW)
    await session.commit()
    bare = await devices.get(session, "A4CF12B3C4D5")
    assert (bare.name, bare.type, bare.capabilities, bare.acks, bare.status) == (
        "ESP32-B3C4D5",
        None,
        [],
        False,
        "unknown",
    )


async def test_a_later_info_changes_only_what_it_sends(session: AsyncSession) -> None:
    first = DeviceInfo.model_validate(
        {"type": "esp32-env", "firmware": "1.4.0", "capabilities": ["temperature"], "rssi": -60}
    )
    await devices.register(session, device_id="ESP32-UPD", now=NOW, info=first)
    await session.commit()
    await devices.update_device(session, device_id="ESP32-UPD", name="Kitchen")
    await session.commit()

    await devices.apply_info(
        session,
        device_id="ESP32-UPD",
        info=DeviceInfo.model_validate({"firmware": "1.5.0", "ip": "10.0.0.7", "name": "Other"}),
    )
    await session.commit()
    session.expire_all()
    device = await devices.get(session, "ESP32-UPD")
    assert (device.firmware_version, device.ip) == ("1.5.0", "10.0.0.7")
    # Untouched: what this info did not send, and the name a person gave it (an info's
    # name is only a first suggestion).
    assert (device.type, device.capabilities, device.rssi, device.name) == (
        "esp32-env",
        ["temperature"],
        -60,
        "Kitchen",
    )


async def test_a_page_of_devices_is_counted_and_paged_by_the_database(
    session: AsyncSession,
) -> None:
    for i in range(7):
        session.add(
            Device(
                id=f"ESP32-{i:04d}",
                name=f"Sensor {i}" if i != 3 else "Kitchen hub",
                type="esp32" if i % 2 else "bench",
                status="online" if i < 4 else "offline",
                tags=["kitchen", "north"] if i in (1, 3, 5) else (["north"] if i == 2 else []),
                first_seen=NOW + i,
            )
        )
    await session.commit()

    async def page(**kwargs: object) -> tuple[list[str], int]:
        rows, total = await devices.list_devices(session, **kwargs)  # type: ignore[arg-type]
        return [d.id for d in rows], total

    assert await page(limit=2) == (["ESP32-0000", "ESP32-0001"], 7)
    assert await page(limit=2, offset=5) == (["ESP32-0005", "ESP32-0006"], 7)
    assert await page(status="online", limit=1) == (["ESP32-0000"], 4)
    assert await page(tag="kitchen") == (["ESP32-0001", "ESP32-0003", "ESP32-0005"], 3)
    assert await page(tag="kitchen", status="online", limit=1, offset=1) == (["ESP32-0003"], 2)
    assert await page(tag="kit") == ([], 0)  # a whole tag, not a part of one
    assert await page(search="KITCHEN") == (["ESP32-0003"], 1)
    assert await page(type_="esp32", tag="north") == (
        ["ESP32-0001", "ESP32-0003", "ESP32-0005"],
        3,
    )

"""A simulated fleet (the real firmware on a fake HAL) running against a test stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from iotp.simulator import Fleet


@asynccontextmanager
async def running_fleet(mqtt_url: str, *, devices: int, seed: int) -> AsyncIterator[Fleet]:
    """Fast-reporting devices without random gas events; stopped (cleanly) on exit."""
    fleet = Fleet(
        devices=devices,
        broker_url=mqtt_url,
        interval=0.5,
        seed=seed,
        connect_rate=200,
        gas_events_per_hour=0,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(fleet.run(stop=stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        yield fleet
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)

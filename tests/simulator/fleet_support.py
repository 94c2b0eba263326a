"""A simulated fleet (the real firmware on a fake HAL) running against a test stack,
and an HTTP server for bundles that do not come from the platform."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from iotp.simulator import Fleet


@asynccontextmanager
async def running_fleet(
    mqtt_url: str, *, devices: int, seed: int, **options: Any
) -> AsyncIterator[Fleet]:
    """Fast-reporting devices without random gas events; stopped (cleanly) on exit.
    options go to Fleet (e.g. ota_key, the key file the devices are flashed with)."""
    fleet = Fleet(
        devices=devices,
        broker_url=mqtt_url,
        interval=0.5,
        seed=seed,
        connect_rate=200,
        gas_events_per_hour=0,
        **options,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(fleet.run(stop=stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        yield fleet
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@asynccontextmanager
async def file_server() -> AsyncIterator[tuple[dict[str, bytes], int]]:
    """(path -> body, port): a plain HTTP/1.0 server on 127.0.0.1."""
    files: dict[str, bytes] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        body = files.get(head.decode().split(" ")[1])
        if body is None:
            writer.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield files, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()

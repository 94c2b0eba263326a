"""The firmware as MicroPython processes (the unix port) for end-to-end tests: the
`micropython` and `mpy-cross` commands are required (a failure under CI=true, a skip
elsewhere). Every device is a build with ROMFS (its firmware runs from an image) and
runs with TEST_HEAP, an ESP32's equivalent (HEAP_BYTES; firmware/README.md, "Heap",
says how it was found and where the firmware stands against 0.75 of it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from iotp.simulator.fleet import SimulatorError
from iotp.simulator.mpy import RUN_HEAP_BYTES, MicroPythonFleet, MpyDevice
from tests.support import need

TEST_HEAP = RUN_HEAP_BYTES


def need_micropython() -> None:
    try:
        from iotp.simulator.mpy import _tool

        _tool("micropython")
        _tool("mpy-cross")
    except SimulatorError as exc:
        need(False, str(exc))


@contextlib.asynccontextmanager
async def mpy_fleet(
    url: str, devices: int = 1, *, wait: bool = True, **kwargs: Any
) -> AsyncIterator[MicroPythonFleet]:
    """A fleet of MicroPython devices; with `wait`, online for the body of the `async
    with`. Stopped cleanly (each publishes offline) on exit."""
    need_micropython()
    kwargs.setdefault("heap", TEST_HEAP)
    kwargs.setdefault("interval", 1.0)
    kwargs.setdefault("gas_events_per_hour", 0.0)
    fleet = MicroPythonFleet(devices=devices, broker_url=url, **kwargs)
    await fleet.prepare()
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(fleet.run(stop=stop, ready=ready))
    try:
        if wait:
            await asyncio.wait_for(ready.wait(), 30)
        yield fleet
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(
    sim: MpyDevice, probe: Callable[[], Any], timeout: float = 20.0, what: str = ""
) -> Any:
    """Waits until probe() is truthy; on a timeout the device's log is in the error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = probe()
        if got:
            return got
        if loop.time() > deadline:
            log = "\n".join(sim.lines[-40:])
            raise AssertionError(f"not reached: {what}\n--- device log ---\n{log}")
        sim.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sim.changed.wait(), 0.2)


def heap_free(sim: MpyDevice, line: str | None = None) -> int:
    """Free heap (bytes) in `line`, by default the last `mem` line the device printed."""
    words = (sim.mem[-1] if line is None else line).split()
    return int(words[words.index("free") + 1])


def tcp_connections(pid: int, port: int) -> int:
    """Established TCP connections of process `pid` to local `port` (Linux /proc): what
    the broker would count for this device."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                if cols[3] == "01" and remote_port == port and cols[9] in inodes:
                    found += 1
    return found

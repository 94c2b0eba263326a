"""ROMFS images (firmware/iotfw/romfs.py): the firmware's writer against MicroPython's
own (mpremote), an image mounted and imported from on the real MicroPython unix port
(less heap than the same modules from files), and the simulator's accounting of the
partition it holds in the process's heap."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mpremote.romfs import VfsRomWriter

from iotp.simulator.mpy import (
    ROMFS_HEAP_BYTES,
    ROMFS_IMAGE,
    ROMFS_PARTITION_BYTES,
    build_firmware,
    micropython_command,
)
from iotp.simulator.firmware import firmware_dir
from tests.firmware.fwlink import fw
from tests.firmware.mpy_support import need_micropython


def _files(named: dict[str, bytes]) -> list[tuple[str, int, object]]:
    return [(path, len(data), (lambda d=data: io.BytesIO(d))) for path, data in named.items()]


def _reference(named: dict[str, bytes]) -> bytes:
    """The same tree written by mpremote, in the order the paths first name each
    file and directory."""
    tree: dict[str, Any] = {}
    for path, data in named.items():
        *dirs, name = path.split("/")
        level = tree
        for d in dirs:
            level = level.setdefault(d + "/", {})
        level[name] = data
    writer = VfsRomWriter()

    def write(level: dict[str, Any]) -> None:
        for name, value in level.items():
            if name.endswith("/"):
                writer.opendir(name[:-1])
                write(value)
                writer.closedir()
            else:
                writer.mkfile(name, value)

    write(tree)
    image: bytes = writer.finalise()
    return image


@pytest.mark.parametrize(
    "named",
    [
        {"iotfw/__init__.mpy": b"M\x06"},
        {"hal.mpy": b"x" * 300, "iotfw/a.mpy": b"a" * 127, "iotfw/b.py": b"b" * 128},
        # lengths either side of one and two bytes of length, and an odd total
        {"iotfw/big.mpy": bytes(range(256)) * 70, "iotfw/odd.mpy": b"\x00" * 16383},
        {"iotfw/even.mpy": b"\x01" * 16384, "other/x.py": b"pass\n"},
        # nested packages
        {"pkg/__init__.py": b"", "pkg/sub/__init__.py": b"x = 1\n", "pkg/sub/m.py": b"y\n"},
    ],
)
def test_the_image_is_byte_for_byte_micropythons(named: dict[str, bytes]) -> None:
    romfs = fw("romfs")
    out = io.BytesIO()
    size = romfs.pack(_files(named), out, bytearray(100))
    assert out.getvalue() == _reference(named)
    assert size == len(out.getvalue())
    assert size % 2 == 0


def test_of_two_files_with_one_path_the_later_is_kept() -> None:
    romfs = fw("romfs")
    out = io.BytesIO()
    files = _files({"top.mpy": b"old"}) + _files({"iotfw/a.mpy": b"a", "top.mpy": b"new"})
    romfs.pack(files, out)
    assert out.getvalue() == _reference({"iotfw/a.mpy": b"a", "top.mpy": b"new"})


def test_a_file_shorter_than_announced_is_an_error() -> None:
    romfs = fw("romfs")
    files = [("iotfw/a.mpy", 10, lambda: io.BytesIO(b"short"))]
    with pytest.raises(OSError, match="shorter"):
        romfs.pack(files, io.BytesIO())


def _micropython(script: str, heap: int, path: Path) -> str:
    out = subprocess.run(
        [micropython_command(), "-X", f"heapsize={heap}", "-c", script],
        cwd=path,
        env={"MICROPYPATH": f"{path}:.frozen"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


IMPORT_DEVICE = """
import gc, sys, vfs
{mount}
gc.collect(); before = gc.mem_alloc()
from iotfw.device import Device
import iotfw
gc.collect()
print(iotfw.__file__, gc.mem_alloc() - before)
"""

MOUNT = """
region = bytearray({size})
with open("{image}", "rb") as f:
    f.readinto(region)
vfs.mount(vfs.VfsRom(region), "/rom")
sys.path.insert(0, "/rom")
"""


def test_the_firmware_imports_from_its_image_in_less_heap(tmp_path: Path) -> None:
    need_micropython()
    build = build_firmware(tmp_path / "build")
    image = build / ROMFS_IMAGE
    assert image.stat().st_size <= ROMFS_PARTITION_BYTES
    mount = MOUNT.format(size=ROMFS_PARTITION_BYTES, image=image)
    rom_file, rom_heap = _micropython(IMPORT_DEVICE.format(mount=mount), 512 * 1024, build).split()
    files_file, files_heap = _micropython(IMPORT_DEVICE.format(mount=""), 512 * 1024, build).split()
    assert rom_file == "/rom/iotfw/__init__.mpy"
    assert files_file == "iotfw/__init__.mpy"  # from the build's files
    # bytecode, names and strings stay in the image: about 40 % less heap
    assert int(rom_heap) < 0.7 * int(files_heap), (rom_heap, files_heap)


USABLE = """
import gc
{take}
gc.collect()
print(gc.mem_free())
"""


def test_the_partition_costs_the_device_no_heap(tmp_path: Path) -> None:
    """The process gets ROMFS_HEAP_BYTES on top of the device's heap, and the
    partition's block takes them: the firmware has what `-X heapsize=<heap>` gives."""
    need_micropython()
    for heap in (106_560, 170_496):
        plain = int(_micropython(USABLE.format(take=""), heap, tmp_path))
        take = f"region = bytearray({ROMFS_PARTITION_BYTES})"
        with_rom = int(_micropython(USABLE.format(take=take), heap + ROMFS_HEAP_BYTES, tmp_path))
        assert 0 <= with_rom - plain <= 256, (heap, plain, with_rom)


LIST = """
import vfs, os
region = bytearray({size})
with open("{image}", "rb") as f:
    f.readinto(region)
vfs.mount(vfs.VfsRom(region), "/rom")
print(" ".join(sorted(os.listdir("/rom/iotfw"))))
"""


def test_iotp_firmware_image_builds_the_boards_image(tmp_path: Path) -> None:
    need_micropython()
    from typer.testing import CliRunner

    from iotp.cli import app

    image = tmp_path / "iotfw.rom"
    result = CliRunner().invoke(app, ["firmware", "image", str(image)])
    assert result.exit_code == 0, result.output
    names = _micropython(LIST.format(size=ROMFS_PARTITION_BYTES, image=image), 400_000, tmp_path)
    package = firmware_dir() / "iotfw"
    sources = sorted(p.stem + ".mpy" for p in package.glob("*.py"))
    assert names.split() == sources

"""Loads the device firmware (firmware/iotfw) into this CPython process.

The firmware is MicroPython code without type annotations, so its modules are
handled as `Any` here.
"""

from __future__ import annotations

import importlib
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

FIRMWARE_PACKAGE = "iotfw"


class FirmwareNotFoundError(RuntimeError):
    pass


def firmware_dir() -> Path:
    """The directory holding the iotfw package: shipped in the wheel as iotp/_firmware,
    or firmware/ in a source checkout."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "_firmware", here.parents[3] / "firmware"):
        if (candidate / FIRMWARE_PACKAGE / "__init__.py").is_file():
            return candidate
    raise FirmwareNotFoundError("firmware/iotfw not found next to the iotp package")


@cache
def module(name: str) -> Any:
    """Imports iotfw.<name> (or iotfw itself for an empty name)."""
    path = str(firmware_dir())
    if path not in sys.path:
        sys.path.append(path)
    full = FIRMWARE_PACKAGE if not name else f"{FIRMWARE_PACKAGE}.{name}"
    mod: ModuleType = importlib.import_module(full)
    return mod


def builtin_version() -> str:
    version: str = module("").VERSION
    return version

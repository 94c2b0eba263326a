"""Builds OTA bundles of the firmware (the format is defined in firmware/iotfw/bundle.py).

    python -m iotp.simulator.bundle 1.1.0 fw-1.1.0.bin

The bundle carries the iotfw package with its VERSION set to the given version;
boot.py and main.py stay as flashed.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

from iotp.simulator import firmware

_VERSION_LINE = re.compile(r'^VERSION = ".*"$', re.MULTILINE)


def build_firmware_bundle(version: str, source: Path | None = None) -> bytes:
    root = source or firmware.firmware_dir()
    files: list[tuple[str, bytes]] = []
    for path in sorted((root / firmware.FIRMWARE_PACKAGE).glob("*.py")):
        data = path.read_bytes()
        if path.name == "__init__.py":
            text, count = _VERSION_LINE.subn(f'VERSION = "{version}"', data.decode())
            if count != 1:
                raise ValueError("iotfw/__init__.py has no VERSION line")
            data = text.encode()
        files.append((f"{firmware.FIRMWARE_PACKAGE}/{path.name}", data))
    bundle: bytes = firmware.module("bundle").build(version, files)
    return bundle


def main() -> None:
    parser = argparse.ArgumentParser(description="build a firmware OTA bundle")
    parser.add_argument("version")
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    data = build_firmware_bundle(args.version)
    args.output.write_bytes(data)
    print(f"{args.output}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()

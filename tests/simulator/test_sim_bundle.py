"""The OTA bundle builder produces what the firmware unpacks."""

from __future__ import annotations

import io

from iotp.simulator.bundle import build_firmware_bundle
from tests.firmware.fwlink import fw


def test_bundle_of_the_firmware_unpacks_with_the_new_version() -> None:
    data = build_firmware_bundle("2.0.0")
    files: dict[str, bytes] = {}

    class Out:
        def __init__(self, path: str) -> None:
            self.path = path
            self.parts: list[bytes] = []

        def write(self, chunk: bytes) -> None:
            self.parts.append(chunk)

        def close(self) -> None:
            files[self.path] = b"".join(self.parts)

    version, paths = fw("bundle").unpack(io.BytesIO(data), Out)
    assert version == "2.0.0"
    assert "iotfw/device.py" in paths
    assert "iotfw/mqtt.py" in paths
    assert b'VERSION = "2.0.0"' in files["iotfw/__init__.py"]

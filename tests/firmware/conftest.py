"""Firmware tests: put firmware/ and the shared pure-test helpers on sys.path."""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
FIRMWARE_DIR = _HERE.parents[1] / "firmware"
PURE_DIR = _HERE / "pure"

for _path in (str(FIRMWARE_DIR), str(PURE_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pytest  # noqa: E402

from tests.firmware.fwlink import BROKERS, BrokerUnderTest, run_broker  # noqa: E402


@pytest.fixture(params=BROKERS)
async def broker(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The embedded broker (amqtt) and Mosquitto, each on a free port."""
    async with run_broker(request.param) as b:
        yield b


__all__ = ["BrokerUnderTest"]

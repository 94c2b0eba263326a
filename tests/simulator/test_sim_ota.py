"""OTA end to end in the simulator: HTTP download, SHA-256, staging, reboot into the
new version, and rollback when the new version cannot reach the broker. The device is
flashed with the tests' signing key and the bundles are signed with it (the refusals
of everything else: test_sim_signed_ota.py); the broker is open on purpose."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import pytest

from iotp.services.manifest import BundleFile, build, public_bytes
from iotp.services.signing import device_key_file
from tests.control_support import TEST_SIGNING_KEY
from tests.firmware.fwlink import Commander, listening, next_message, run_broker, running_fleet
from tests.simulator.fleet_support import file_server

OTA_KEY = device_key_file(public_bytes(TEST_SIGNING_KEY.public_key()))


@pytest.fixture
async def served() -> AsyncIterator[tuple[dict[str, bytes], int]]:
    async with file_server() as server:
        yield server


def bundle(version: str) -> bytes:
    files = [
        BundleFile("iotfw/__init__.py", f'VERSION = "{version}"\n'.encode()),
        BundleFile("iotfw/extra.py", b"# " + b"x" * 20000 + b"\n"),
    ]
    return build(version, files).sign(TEST_SIGNING_KEY).to_bytes()


async def test_ota_update_rollback_and_hash_mismatch(
    served: tuple[dict[str, bytes], int],
) -> None:
    files, port = served
    good, broken = bundle("1.1.0"), bundle("1.2.0-broken")
    files["/fw-1.1.0.bin"] = good
    files["/fw-1.2.0.bin"] = broken
    async with (
        run_broker("amqtt") as broker,
        running_fleet(
            broker.url, interval=1, config={"ota_confirm_timeout": 10}, ota_key=OTA_KEY
        ) as fleet,
    ):
        sim = fleet.devices[0]
        observer = await broker.observer()
        await observer.subscribe(f"devices/{sim.node_id}/#")
        await listening(observer, sim.node_id)
        cmd = Commander(observer, sim.node_id)
        try:
            # a wrong hash: refused, the old version keeps running
            ack = await cmd.send(
                "ota",
                {
                    "url": f"http://127.0.0.1:{port}/fw-1.1.0.bin",
                    "sha256": "0" * 64,
                    "version": "1.1.0",
                },
            )
            assert ack["status"] == "error"
            assert ack["error"] == "sha256 mismatch"
            assert sim.boots == 1
            # a missing file
            ack = await cmd.send(
                "ota", {"url": f"http://127.0.0.1:{port}/nope", "sha256": "0" * 64, "version": "9"}
            )
            assert ack["status"] == "error"
            assert "404" in ack["error"]

            # a good update: progress, reboot, final ok from the new version
            ack = await cmd.send(
                "ota",
                {
                    "url": f"http://127.0.0.1:{port}/fw-1.1.0.bin",
                    "sha256": hashlib.sha256(good).hexdigest(),
                    "version": "1.1.0",
                    "size": len(good),
                },
                final=False,
            )
            stages = [ack["result"]["stage"]]
            while True:
                ack = await cmd.send_next(ack["id"], timeout=15)
                if ack["status"] != "progress":
                    break
                stages.append(ack["result"]["stage"])
            assert ack == {"id": ack["id"], "status": "ok", "result": {"version": "1.1.0"}}
            # online it downloads and checks what it got; it installs as it boots
            assert stages[0] == "downloading"
            assert stages[-2:] == ["verifying", "rebooting"], stages
            info = json.loads(
                await next_message(observer, cmd.topic("info"), match=lambda p: b'"1.1.0"' in p)
            )
            assert info["firmware"] == "1.1.0"
            assert sim.boots == 2
            assert sim.version == "1.1.0"

            # a version that never reaches the broker is rolled back
            ack = await cmd.send(
                "ota",
                {
                    "url": f"http://127.0.0.1:{port}/fw-1.2.0.bin",
                    "sha256": hashlib.sha256(broken).hexdigest(),
                    "version": "1.2.0-broken",
                },
                timeout=30,
            )
            assert ack["status"] == "error"
            assert ack["error"] == "rolled_back"
            assert sim.version == "1.1.0"
            assert sim.boots == 4
            assert sim.reasons == ["ota", "ota", "rollback"]
        finally:
            await observer.close()

"""A firmware rollout from the API to simulated devices running the real firmware: they
download the bundle over HTTP (a signed URL: devices have no user token), verify its
SHA-256 and its signature (the platform signs it at upload with its key, the devices are
flashed with that key's file), switch version, reconnect and report. Open broker on
purpose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from iotp.services import signing
from iotp.services.manifest import public_bytes
from iotp.simulator.bundle import build_firmware_bundle
from tests.simulator.fleet_support import running_fleet
from tests.support import OPEN, run_stack

DEVICES = 3


async def test_rollout_updates_simulated_fleet(tmp_path: Path) -> None:
    key = signing.write_new_key(signing.current_path(tmp_path))  # `iotp firmware keygen`
    ota_key = signing.device_key_file(public_bytes(key.public_key()))
    async with (
        run_stack("embedded-sqlite", tmp_path, mode=OPEN) as stack,
        running_fleet(stack.mqtt_url, devices=DEVICES, seed=11, ota_key=ota_key) as fleet,
    ):
        ids = sorted(sim.node_id for sim in fleet.devices)

        async def described() -> bool:
            body = await stack.get("/api/devices", limit=100)
            return sum(1 for d in body["data"] if "ota" in d["capabilities"]) == DEVICES

        await stack.wait_for(described, timeout=15)
        bundle = build_firmware_bundle("1.1.0")
        r = await stack.http.post(
            "/api/firmware",
            params={"version": "1.1.0"},
            content=bundle,
            headers={"content-type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text
        r = await stack.http.post(
            "/api/rollouts",
            json={
                "firmware_id": r.json()["id"],
                "selector": {"devices": ids},
                "rate_per_minute": 6000,
                "failure_threshold": 0.5,
            },
        )
        assert r.status_code == 201, r.text
        rollout_id = r.json()["id"]

        async def completed() -> Any:
            body = await stack.get(f"/api/rollouts/{rollout_id}")
            return body if body["status"] == "completed" else None

        done = await stack.wait_for(completed, timeout=60)
        assert done["counts"]["installed"] == DEVICES, done

        async def all_updated() -> bool:
            body = await stack.get("/api/devices", limit=100)
            return all(d["firmware_version"] == "1.1.0" for d in body["data"])

        await stack.wait_for(all_updated, timeout=15)
        # Each device fetched the URL signed for it and its command; without a signature
        # the download is refused, and a device's URL is spent once its command ended.
        urls = []
        for d in done["devices"]:
            cmd = await stack.get(f"/api/commands/{d['command_id']}")
            assert f"device={d['device_id']}" in cmd["params"]["url"]
            urls.append(cmd["params"]["url"])
        async with httpx.AsyncClient() as anonymous:
            assert (await anonymous.get(done["download_url"])).status_code == 401
            spent = await anonymous.get(urls[0])
            assert spent.status_code == 403
            assert "ended" in spent.json()["detail"]

"""The simulator fleet against a running platform (broker + worker + API): devices
are discovered, data is stored, commands are acked, the gas automation fires."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.simulator.fleet_support import running_fleet
from tests.support import OPEN, run_stack

DEVICES = 10


async def test_fleet_fills_the_platform(tmp_path: Path) -> None:
    async with (
        run_stack("embedded-sqlite", tmp_path, mode=OPEN) as stack,
        running_fleet(stack.mqtt_url, devices=DEVICES, seed=5) as fleet,
    ):
        ids = {sim.node_id for sim in fleet.devices}

        async def all_online() -> bool:
            body = await stack.get("/api/devices", status="online", limit=100)
            return {d["id"] for d in body["data"]} >= ids

        await stack.wait_for(all_online, timeout=15)
        sim = fleet.devices[0]

        async def described() -> Any:
            device = await stack.get(f"/api/devices/{sim.node_id}")
            return device if device["firmware_version"] else None

        device = await stack.wait_for(described, timeout=10)
        assert device["firmware_version"] == "1.0.0"
        assert device["name"] == "SIM-00001"
        assert "relay:fan" in device["capabilities"]

        async def has_metrics() -> Any:
            latest = await stack.get(f"/api/devices/{sim.node_id}/latest")
            return {"temperature", "humidity", "gas"} <= set(latest["metrics"])

        await stack.wait_for(has_metrics, timeout=10)

        # a command goes through the platform to the firmware and back
        r = await stack.http.post(
            f"/api/devices/{sim.node_id}/commands?wait=true",
            json={"command": "relay", "params": {"name": "light", "state": "on"}},
        )
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "acked"
        assert r.json()["result"] == {"name": "light", "state": True}
        assert sim.hal.relays["light"] is True

        # gas leak: the device forces its fan on and reports the alarm
        r = await stack.http.post(
            f"/api/devices/{sim.node_id}/commands?wait=true",
            json={"command": "automation", "params": {"fan_auto": False}},
        )
        assert r.json()["status"] == "acked", r.text
        sim.hal.physics.start_gas_event(time.time() - 25, 800.0, 120.0)

        async def gas_event() -> bool:
            events = await stack.get(f"/api/devices/{sim.node_id}/events")
            return any("gas_alarm" in str(e) for e in events["data"])

        await stack.wait_for(gas_event, timeout=10)
        assert sim.hal.relays["fan"] is True

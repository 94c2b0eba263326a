"""The firmware's provisioning exchange on the wire, against a plain broker where a
test plays the platform: a fleet secret set with `set_config` switches a connected
device to provisioning (its link is halted, the `provision` account takes over); the
request carries the secret it stored; `approved` makes it store its credentials and
come back as itself."""

from __future__ import annotations

import asyncio
import json

from tests.firmware.fwlink import (
    Commander,
    listening,
    next_message,
    run_broker,
    running_fleet,
    wait_until,
)

FLEET = "fleet-secret-for-the-link-test"


async def test_set_fleet_secret_then_provision_and_come_back_as_itself() -> None:
    async with run_broker("amqtt") as broker, running_fleet(broker.url, interval=0.5) as fleet:
        sim = fleet.devices[0]
        node = sim.node_id
        platform = await broker.observer()
        await platform.subscribe(f"devices/{node}/#")
        await platform.subscribe(f"provision/{node}/request")
        await listening(platform, node)
        try:
            assert sim.credential_mode == "open"
            ack = await Commander(platform, node).send("set_config", {"fleet_secret": FLEET})
            assert ack["status"] == "ok"
            assert ack["result"] == {"fleet_secret": "********"}  # never echoed

            request = json.loads(await next_message(platform, f"provision/{node}/request"))
            stored = json.loads(sim.hal.files["config.json"])
            assert request == {"secret": stored["provision_secret"]}
            assert len(request["secret"]) == 48
            assert not sim.device.mqtt.connected  # its own link is halted meanwhile

            platform.publish(f"provision/{node}/response", '{"status": "pending"}')
            await wait_until(lambda: sim.credential_mode == "pending")
            platform.publish(f"provision/{node}/response", '{"status": "approved"}')
            await wait_until(lambda: sim.credential_mode == "own" and sim.connected, timeout=10)
            stored = json.loads(sim.hal.files["config.json"])
            assert stored["mqtt_user"] == node
            assert stored["mqtt_password"] == request["secret"]
            assert stored["provision_secret"] == ""
            assert sim.device.mqtt.user == node
            # back as itself: online again, and data flows
            await next_message(platform, f"devices/{node}/status", match=lambda p: p == b"online")
            await next_message(platform, f"devices/{node}/data")
            assert sim.hal.statuses[-1] == "ok"
        finally:
            await platform.close()

"""What the worker and the API publish as platform events matches the models in
iotp.protocol.events (the dashboard's types are generated from them).
Devices: open mode on purpose (the stack's default broker takes any client)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from iotp.protocol.events import EVENT_PAYLOADS, Event, EventType
from tests.control_support import FakeDevice
from tests.support import Stack


async def test_published_events_match_their_models(stack: Stack) -> None:
    observer = await stack.device()
    await observer.subscribe(f"{stack.settings.events_topic_prefix}/#")
    dev = await FakeDevice(stack, "EVT000000001").start()
    dev.client.publish(  # type: ignore[union-attr]
        dev.topic("events"), orjson.dumps({"event": "boot", "level": "warning", "reset": "wdt"})
    )
    wanted = {
        EventType.DEVICE_REGISTERED,
        EventType.DEVICE_STATUS,
        EventType.DEVICE_UPDATED,
        EventType.DEVICE_STATE,
        EventType.DEVICE_EVENT,
        EventType.COMMAND_ACK,
        EventType.COMMAND_UPDATE,
        EventType.DEVICE_DELETED,
    }
    seen: dict[EventType, list[dict[str, Any]]] = {}

    def acked() -> bool:
        return any(c["status"] == "acked" for c in seen.get(EventType.COMMAND_UPDATE, []))

    async def collect(done: Any) -> None:
        while not done():
            topic, payload = await observer.messages.get()
            event = Event.model_validate_json(payload)
            assert topic == f"{stack.settings.events_topic_prefix}/{event.type}/{event.device_id}"
            EVENT_PAYLOADS[event.type].model_validate(event.payload)
            seen.setdefault(event.type, []).append(event.payload)

    r = await stack.http.post(
        f"/api/devices/{dev.id}/commands?wait=true",
        json={"command": "relay", "params": {"name": "light", "state": "on"}},
    )
    assert r.status_code == 201, r.text
    # The API answers ?wait=true from the device's ack itself; the worker records the ack
    # and publishes its command_update a moment later, which a delete must not overtake.
    await asyncio.wait_for(collect(acked), 15)
    r = await stack.http.patch(f"/api/devices/{dev.id}", json={"notes": "by the door"})
    assert r.status_code == 200, r.text
    r = await stack.http.delete(f"/api/devices/{dev.id}")
    assert r.status_code == 204, r.text

    await asyncio.wait_for(collect(lambda: wanted <= seen.keys()), 15)
    statuses = [c["status"] for c in seen[EventType.COMMAND_UPDATE]]
    assert "acked" in statuses

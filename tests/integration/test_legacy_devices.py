"""Devices built to the original design, end to end on both stacks (open mode on
purpose: these tests are about what such a device may be sent and what it reports, not
who may connect; docs/devices.md says how it joins in the secure default).

The test device behaves exactly as that design's firmware: it publishes
``devices/{mac}/data`` every 2 s, listens on ``devices/{mac}/commands``, reports
``status`` "updating" / "update_success" around an update, never sends ``info`` and
never acknowledges a command."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

from tests.control_support import small_bundle
from tests.support import MqttTestClient, Stack

MAC = "A4CF12B3C4D5"


class LegacyDevice:
    def __init__(self, stack: Stack, mac: str = MAC) -> None:
        self.stack = stack
        self.mac = mac
        self.received: list[dict[str, Any]] = []
        self.client: MqttTestClient | None = None
        self._task: asyncio.Task[None] | None = None
        stack.cleanup.append(self.stop)

    async def start(self) -> LegacyDevice:
        self.client = await self.stack.device(self.mac)
        self.client.client.on_message = self._on_message
        await self.client.subscribe(f"devices/{self.mac}/commands")
        self._task = asyncio.create_task(self._report())
        return self

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        self.received.append(orjson.loads(payload))
        return 0

    async def _report(self) -> None:
        assert self.client is not None
        while True:
            self.client.publish(
                f"devices/{self.mac}/data", orjson.dumps({"temperature": 21.5, "humidity": 40})
            )
            await asyncio.sleep(2)  # its report interval

    def state(self, state: dict[str, Any]) -> None:
        assert self.client is not None
        self.client.publish(f"devices/{self.mac}/state", orjson.dumps(state), retain=True)

    def status(self, value: str) -> None:
        assert self.client is not None
        self.client.publish(f"devices/{self.mac}/status", orjson.dumps({"status": value}))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _registered(stack: Stack, mac: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await stack.http.get(f"/api/devices/{mac}")
        return r.json() if r.status_code == 200 else None

    found: dict[str, Any] = await stack.wait_for(probe)
    return found


async def test_device_without_info_gets_the_standard_commands(stack: Stack) -> None:
    dev = await LegacyDevice(stack).start()
    device = await _registered(stack, dev.mac)
    # Only what its data showed (if that was learned yet): nothing it could be sent.
    assert set(device["capabilities"]) <= {"temperature", "humidity"}
    assert device["capabilities_known"] is False
    sent = [
        ("relay", {"name": "light", "state": "on"}, "relay", {"name": "light", "state": "on"}),
        ("servo", {"angle": 90}, "servo", {"angle": 90}),
        ("reboot", {}, "reboot", {}),
        ("custom", {"name": "beep", "times": 2}, "beep", {"times": 2}),
    ]
    ids = []
    for command, params, _, _ in sent:
        r = await stack.http.post(
            f"/api/devices/{dev.mac}/commands", json={"command": command, "params": params}
        )
        assert r.status_code == 201, (command, r.text)
        ids.append(r.json()["id"])
    await stack.wait_for(lambda: _received(dev, len(sent)))
    # Each publisher sends as it creates; the order across commands is not promised.
    got = sorted((m["id"], m["command"], m["params"]) for m in dev.received)
    assert got == sorted(
        (cid, wire, params) for cid, (_, _, wire, params) in zip(ids, sent, strict=True)
    )
    # The parameters' shapes are still checked; commands that need info are refused.
    bad = await stack.http.post(
        f"/api/devices/{dev.mac}/commands", json={"command": "servo", "params": {"angle": 500}}
    )
    assert bad.status_code == 422
    assert "angle" in bad.text
    ota = await stack.http.post(
        f"/api/devices/{dev.mac}/commands", json={"command": "ota", "params": {"url": "x"}}
    )
    assert ota.status_code == 422
    assert "capabilities are unknown" in ota.text
    # A device that describes itself (info) is checked against what it lists.
    info = {"firmware": "1.0.0", "capabilities": ["relay:fan"]}
    assert dev.client is not None
    dev.client.publish(f"devices/{dev.mac}/info", orjson.dumps(info))

    async def described() -> bool:
        return bool((await stack.get(f"/api/devices/{dev.mac}"))["capabilities_known"])

    await stack.wait_for(described)
    refused = await stack.http.post(
        f"/api/devices/{dev.mac}/commands",
        json={"command": "relay", "params": {"name": "light", "state": "on"}},
    )
    assert refused.status_code == 422
    assert "relay:" in refused.text


async def _received(dev: LegacyDevice, n: int) -> bool:
    return len(dev.received) >= n


async def test_update_statuses_are_device_events_not_bad_status(stack: Stack) -> None:
    dev = await LegacyDevice(stack).start()
    await _registered(stack, dev.mac)

    async def online() -> bool:
        return (await stack.get(f"/api/devices/{dev.mac}"))["status"] == "online"

    await stack.wait_for(online)
    dev.status("updating")
    assert dev.client is not None
    dev.client.publish(f"devices/{dev.mac}/status", b"update_success")

    async def both() -> list[str] | None:
        events = (await stack.get(f"/api/devices/{dev.mac}/events"))["data"]
        names = [e["data"].get("event") for e in events if e["type"] == "device_event"]
        return names if {"updating", "update_success"} <= set(names) else None

    names = await stack.wait_for(both)
    assert sorted(names) == ["update_success", "updating"]
    stats = await stack.get("/api/stats")
    assert "bad_status" not in stats["rejected_by_reason"]
    device = await stack.get(f"/api/devices/{dev.mac}")
    assert device["status"] == "online"
    history = await stack.get(f"/api/devices/{dev.mac}/telemetry", metric="temperature")
    assert history["series"]["temperature"]


async def test_commands_to_a_device_that_never_acks_say_so_until_it_acks(stack: Stack) -> None:
    dev = await LegacyDevice(stack).start()
    assert (await _registered(stack, dev.mac))["acks"] is False
    relay = {"command": "relay", "params": {"name": "light", "state": "on"}, "timeout": 0.5}
    r = await stack.http.post(f"/api/devices/{dev.mac}/commands", json=relay)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]

    async def sent() -> dict[str, Any] | None:
        body: dict[str, Any] = await stack.get(f"/api/commands/{cid}")
        return body if body["status"] == "sent" else None

    body = await stack.wait_for(sent)
    # No deadline: the sweep never calls it timed_out; the note says why.
    assert body["deadline"] is None
    assert [n["note"] for n in body["notes"]] == ["device does not acknowledge"]
    assert body["error"] is None
    await stack.wait_for(lambda: _received(dev, 1))
    # The device acks once: from then on it is treated as acking.
    assert dev.client is not None
    dev.client.publish(f"devices/{dev.mac}/ack", orjson.dumps({"id": cid, "status": "ok"}))

    async def acked() -> dict[str, Any] | None:
        body: dict[str, Any] = await stack.get(f"/api/commands/{cid}")
        return body if body["status"] == "acked" else None

    await stack.wait_for(acked)
    assert (await stack.get(f"/api/devices/{dev.mac}"))["acks"] is True
    r = await stack.http.post(f"/api/devices/{dev.mac}/commands", json=relay)
    second = r.json()["id"]

    async def timed_out() -> dict[str, Any] | None:
        body: dict[str, Any] = await stack.get(f"/api/commands/{second}")
        return body if body["status"] == "timed_out" else None

    assert (await stack.wait_for(timed_out))["notes"] == []


async def test_capabilities_are_learned_from_data_and_state_until_info(stack: Stack) -> None:
    dev = await LegacyDevice(stack).start()
    await _registered(stack, dev.mac)
    dev.state({"relays": {"light": True, "pump": False}, "servo": 90, "mode": "auto"})
    learned = ["humidity", "relay:light", "relay:pump", "servo", "temperature"]

    async def shown() -> dict[str, Any] | None:
        device: dict[str, Any] = await stack.get(f"/api/devices/{dev.mac}")
        return device if device["capabilities"] == learned else None

    device = await stack.wait_for(shown)
    assert device["capabilities_known"] is False
    # Learned is not described: a relay it has not shown may still be sent.
    r = await stack.http.post(
        f"/api/devices/{dev.mac}/commands",
        json={"command": "relay", "params": {"name": "fan", "state": "on"}},
    )
    assert r.status_code == 201, r.text
    # A new metric is learned too, each once.
    assert dev.client is not None
    dev.client.publish(f"devices/{dev.mac}/data", orjson.dumps({"gas": 120, "note": "x"}))

    async def with_gas() -> bool:
        caps = (await stack.get(f"/api/devices/{dev.mac}"))["capabilities"]
        return bool(caps == sorted([*learned, "gas"]))

    await stack.wait_for(with_gas)
    # Its info is the description from then on; what it shows is no longer added.
    info = {"firmware": "1.0.0", "capabilities": ["temperature", "relay:light"]}
    dev.client.publish(f"devices/{dev.mac}/info", orjson.dumps(info))

    async def described() -> dict[str, Any] | None:
        device: dict[str, Any] = await stack.get(f"/api/devices/{dev.mac}")
        return device if device["capabilities_known"] else None

    device = await stack.wait_for(described)
    assert device["capabilities"] == ["temperature", "relay:light"]
    dev.client.publish(f"devices/{dev.mac}/data", orjson.dumps({"co2": 400}))
    await stack.wait_for(lambda: _has_metric(stack, dev.mac, "co2"))
    assert (await stack.get(f"/api/devices/{dev.mac}"))["capabilities"] == [
        "temperature",
        "relay:light",
    ]


async def _has_metric(stack: Stack, mac: str, metric: str) -> bool:
    history = await stack.get(f"/api/devices/{mac}/telemetry", metric=metric)
    return bool(history["series"].get(metric))


async def test_rollout_follows_the_status_messages_of_a_device_that_never_acks(
    stack: Stack,
) -> None:
    dev = await LegacyDevice(stack).start()
    await _registered(stack, dev.mac)

    async def online() -> bool:
        return (await stack.get(f"/api/devices/{dev.mac}"))["status"] == "online"

    await stack.wait_for(online)
    fw = await stack.http.post(
        "/api/firmware",
        params={"version": "2.0.0"},
        content=small_bundle("2.0.0"),
        headers={"content-type": "application/octet-stream"},
    )
    assert fw.status_code == 201, fw.text
    r = await stack.http.post(
        "/api/rollouts",
        json={"firmware_id": fw.json()["id"], "selector": {"devices": [dev.mac]}},
    )
    assert r.status_code == 201, r.text  # capabilities unknown: it may update itself
    rid = r.json()["id"]

    async def device_in_rollout(status: str) -> dict[str, Any] | None:
        rollout = await stack.get(f"/api/rollouts/{rid}")
        (one,) = rollout["devices"]
        return rollout if one["status"] == status else None

    sent = await stack.wait_for(lambda: device_in_rollout("sent"))
    command = await stack.get(f"/api/commands/{sent['devices'][0]['command_id']}")
    assert command["status"] == "sent"
    assert [n["note"] for n in command["notes"]] == ["device does not acknowledge"]
    await stack.wait_for(lambda: _received(dev, 1))
    assert dev.received[0]["command"] == "ota"
    dev.status("updating")
    downloading = await stack.wait_for(lambda: device_in_rollout("downloading"))
    assert downloading["devices"][0]["stage"] == "updating"
    assert downloading["status"] == "running"
    dev.status("update_success")
    done = await stack.wait_for(lambda: device_in_rollout("installed"))
    assert done["devices"][0]["stage"] == "update_success"

    async def completed() -> bool:
        return (await stack.get(f"/api/rollouts/{rid}"))["status"] == "completed"

    await stack.wait_for(completed)
    # The command still says what is known of it: sent, never acknowledged.
    command = await stack.get(f"/api/commands/{sent['devices'][0]['command_id']}")
    assert command["status"] == "sent"

"""End to end on real parts: MQTT in, REST and WebSocket out, on both stacks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import websockets

from tests.support import Stack

DEV = "A4CF12B3C4D5"


async def _ws(stack: Stack, events: list[str], devices: list[str]) -> Any:
    ws = await websockets.connect(stack.ws_url)
    await ws.send(
        orjson.dumps({"action": "subscribe", "events": events, "devices": devices}).decode()
    )
    reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply["type"] == "subscribed"
    return ws


async def _next_event(
    ws: Any,
    event_type: str,
    timeout: float = 10.0,
    where: Callable[[dict[str, Any]], bool] = lambda payload: True,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {event_type} event within {timeout}s")
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), remaining))
        if msg.get("type") == event_type and where(msg.get("payload") or {}):
            return msg


async def _collect(ws: Any, types: set[str], timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """The first event of each wanted type, whatever order they arrive in."""
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while not types <= seen.keys():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"missing events {types - seen.keys()} within {timeout}s")
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), remaining))
        seen.setdefault(msg.get("type"), msg)
    return seen


async def _stats(stack: Stack) -> dict[str, Any]:
    return await stack.get("/api/stats")


async def test_newcomer_flow_device_appears_with_data_live(stack: Stack) -> None:
    device = await stack.device()
    # "subscribed" means live (the API's on-demand data subscription is acknowledged).
    ws = await _ws(stack, ["device_registered", "device_data", "device_status"], ["*"])
    device.publish(f"devices/{DEV}/data", b'{"temperature": 21.5}')

    events = await _collect(ws, {"device_registered", "device_data", "device_status"})
    registered = events["device_registered"]
    assert registered["device_id"] == DEV
    assert registered["payload"]["name"] == "ESP32-B3C4D5"
    data = events["device_data"]
    assert data["device_id"] == DEV
    assert data["payload"]["metrics"] == {"temperature": 21.5}
    assert events["device_status"]["payload"]["status"] == "online"
    await ws.close()

    async def stored() -> Any:
        latest = await stack.get(f"/api/devices/{DEV}/latest")
        return latest if latest["metrics"] else None

    latest = await stack.wait_for(stored)
    assert latest["metrics"]["temperature"]["value"] == 21.5
    dev = await stack.get(f"/api/devices/{DEV}")
    assert dev["status"] == "online"
    assert dev["name"] == "ESP32-B3C4D5"
    listing = await stack.get("/api/devices")
    assert listing["count"] == 1
    history = await stack.get(f"/api/devices/{DEV}/telemetry", metric="temperature")
    assert [p["value"] for p in history["series"]["temperature"]] == [21.5]
    events = await stack.get(f"/api/devices/{DEV}/events")
    assert {e["type"] for e in events["data"]} >= {"registered", "status"}
    health = await stack.get("/api/health")
    assert health == {"status": "ok", "database": "ok", "mqtt": "ok", "workers": 1, "detail": {}}


async def test_info_sets_type_and_capabilities_and_updates(stack: Stack) -> None:
    device = await stack.device()
    info = {
        "type": "esp32-env",
        "firmware": "1.0.0",
        "capabilities": ["temperature", "relay:light"],
        "interval": 5,
        "rssi": -60,
        "ip": "10.0.0.7",
        "board": "devkitc",
    }
    device.publish(f"devices/{DEV}/info", orjson.dumps(info), retain=True)

    async def registered() -> Any:
        r = await stack.http.get(f"/api/devices/{DEV}")
        return r.json() if r.status_code == 200 else None

    dev = await stack.wait_for(registered)
    assert dev["type"] == "esp32-env"
    assert dev["capabilities"] == ["temperature", "relay:light"]
    assert dev["report_interval"] == 5.0
    assert dev["metadata"] == {"board": "devkitc"}
    info["firmware"] = "1.1.0"
    device.publish(f"devices/{DEV}/info", orjson.dumps(info), retain=True)

    async def updated() -> bool:
        return (await stack.get(f"/api/devices/{DEV}"))["firmware_version"] == "1.1.0"

    await stack.wait_for(updated)

    # A worker that has not met the device since it started (another worker of the share
    # group registered it) applies the info it sees first: a reboot's new firmware is
    # not lost because someone else created the row.
    stack.worker.ingestor.forget(DEV)
    info["firmware"] = "1.2.0"
    done = stack.worker.ingestor.handle(f"devices/{DEV}/info", orjson.dumps(info))
    assert done is not None
    await done
    assert (await stack.get(f"/api/devices/{DEV}"))["firmware_version"] == "1.2.0"


async def test_the_fleets_latest_values_in_one_request(stack: Stack) -> None:
    device = await stack.device()
    # Different metrics in different messages (a sensor report, then a Wi-Fi report).
    device.publish("devices/FLEETA/data", b'{"temperature": 20.5, "humidity": 40, "ts": 1000}')
    device.publish("devices/FLEETA/data", b'{"temperature": 21.5, "ts": 1010}')
    device.publish("devices/FLEETA/data", b'{"rssi": -60, "ts": 1020}')
    device.publish("devices/FLEETB/data", b'{"gas": 300}')
    device.publish("devices/FLEETC/status", b"online")  # registered, never reported

    async def all_stored() -> Any:
        fleet = await stack.get("/api/latest")
        a = fleet["data"].get("FLEETA", {})
        return (
            fleet
            if {"temperature", "humidity", "rssi"} <= a.keys() and "FLEETB" in fleet["data"]
            else None
        )

    fleet = await stack.wait_for(all_stored)
    a = fleet["data"]["FLEETA"]
    assert a["temperature"]["value"] == 21.5  # the newest of the two
    assert a["humidity"]["value"] == 40
    assert a["rssi"]["value"] == -60
    assert fleet["data"]["FLEETB"]["gas"]["value"] == 300
    assert "FLEETC" not in fleet["data"]
    assert fleet["count"] == len(fleet["data"])
    # The same as each device's own latest values.
    one = await stack.get("/api/devices/FLEETA/latest")
    assert {k: (v["value"], v["ts"]) for k, v in one["metrics"].items()} == {
        k: (v["value"], v["ts"]) for k, v in a.items()
    }
    only = await stack.get("/api/latest", devices="FLEETB,NOSUCH")
    assert set(only["data"]) == {"FLEETB"}
    many = ",".join(f"D{i}" for i in range(1001))
    r = await stack.http.get("/api/latest", params={"devices": many})
    assert r.status_code == 422
    assert "at most 1000" in r.text


BAD_INPUTS = [
    ("devices/bad!/data", b'{"t": 1}', "bad_device_id"),
    ("devices/X1/nonsense", b'{"t": 1}', "bad_topic"),
    ("devices/X1/data", b"not json", "bad_json"),
    ("devices/X1/data", b"[1,2,3]", "not_object"),
    ("devices/X1/data", b'{"t": NaN}', "non_finite"),
    ("devices/X1/data", b'{"t": 1e999}', "non_finite"),
    ("devices/X1/data", b'{"a b": 1}', "bad_name"),
    ("devices/X1/data", b'{"t": 1, "ts": "now"}', "bad_type"),
    ("devices/X1/data", b"{}", "empty"),
    ("devices/X1/data", b'{"t": "' + b"x" * 20000 + b'"}', "oversize"),
    ("devices/X1/status", b"maybe", "bad_status"),
    ("devices/X1/info", b'{"capabilities": 5}', "bad_info"),
    ("devices/X1/ack", b'{"status": "ok"}', "bad_ack"),
    ("devices/X1/events", b'{"level": "info"}', "bad_event"),
]


async def test_bad_input_is_rejected_counted_and_good_devices_keep_flowing(stack: Stack) -> None:
    bad = await stack.device()
    good = await stack.device()
    for i, (topic, payload, _) in enumerate(BAD_INPUTS):
        bad.publish(topic, payload)
        good.publish(f"devices/{DEV}/data", orjson.dumps({"t": i, "seq": i, "ts": time.time()}))

    expected: dict[str, int] = {}
    for _, _, reason in BAD_INPUTS:
        expected[reason] = expected.get(reason, 0) + 1

    async def all_counted() -> Any:
        s = await _stats(stack)
        return (
            s
            if s["messages_stored"] == len(BAD_INPUTS) and s["rejected_by_reason"] == expected
            else None
        )

    try:
        stats = await stack.wait_for(all_counted)
    except AssertionError:
        raise AssertionError(f"expected {expected}, got {await _stats(stack)}") from None
    assert stats["messages_rejected"] == len(BAD_INPUTS)
    # Devices that only sent garbage were never registered.
    listing = await stack.get("/api/devices")
    assert [d["id"] for d in listing["data"]] == [DEV]
    history = await stack.get(f"/api/devices/{DEV}/telemetry", metric="t")
    assert [p["value"] for p in history["series"]["t"]] == [
        float(i) for i in range(len(BAD_INPUTS))
    ]


async def test_redelivered_message_is_stored_once(stack: Stack) -> None:
    device = await stack.device()
    payload = orjson.dumps({"t": 1.0, "ts": time.time(), "seq": 42})
    device.publish(f"devices/{DEV}/data", payload)
    device.publish(f"devices/{DEV}/data", payload)  # what a QoS 1 redelivery looks like
    device.publish(f"devices/{DEV}/data", orjson.dumps({"t": 2.0, "ts": time.time(), "seq": 43}))

    async def counted() -> Any:
        s = await _stats(stack)
        return s if s["messages_stored"] + s["messages_duplicate"] == 3 else None

    stats = await stack.wait_for(counted)
    assert stats["messages_stored"] == 2
    assert stats["messages_duplicate"] == 1
    history = await stack.get(f"/api/devices/{DEV}/telemetry", metric="t")
    assert [p["value"] for p in history["series"]["t"]] == [1.0, 2.0]


async def test_presence_last_will_timeout_and_return(stack: Stack) -> None:
    from gmqtt import Message

    from tests.support import MqttTestClient

    ws = await _ws(stack, ["device_status"], [DEV])
    will = Message(f"devices/{DEV}/status", b"offline", qos=1, retain=True)
    device = await MqttTestClient(stack.mqtt_url, DEV, will=will).connect()
    device.publish(f"devices/{DEV}/info", orjson.dumps({"interval": 0.2}), retain=True)
    device.publish(f"devices/{DEV}/status", b"online", retain=True)
    first = await _next_event(ws, "device_status")
    assert first["payload"]["status"] == "online"

    # Kill the connection without DISCONNECT: the broker publishes the last will.
    device.client._connection._transport.close()
    went = await _next_event(ws, "device_status")
    assert went["payload"] == {"status": "offline", "previous": "online", "reason": "status"}

    # Back, then silent: the timeout (3 x 0.2 s, floor 1 s in tests) takes it offline.
    again = await stack.device()
    again.publish(f"devices/{DEV}/data", b'{"t": 1}')
    back = await _next_event(ws, "device_status")
    assert back["payload"]["status"] == "online"
    assert back["payload"]["reason"] == "data"
    timed_out = await _next_event(ws, "device_status", timeout=10)
    assert timed_out["payload"]["reason"] == "timeout"
    await ws.close()

    async def recorded() -> Any:
        events = await stack.get(f"/api/devices/{DEV}/events")
        reasons = [e["data"].get("reason") for e in events["data"] if e["type"] == "status"]
        return reasons if len(reasons) >= 4 else None

    reasons = await stack.wait_for(recorded)
    # newest first; the first "online" came with the info message (reason "data")
    assert reasons[:4] == ["timeout", "data", "status", "data"]
    assert (await stack.get(f"/api/devices/{DEV}"))["status"] == "offline"


async def test_websocket_device_filter_and_unsubscribe(stack: Stack) -> None:
    device = await stack.device()
    ws = await _ws(stack, ["device_data"], ["WANTED"])  # live once answered
    device.publish("devices/OTHER/data", b'{"t": 1}')
    device.publish("devices/WANTED/data", b'{"t": 2}')
    event = await _next_event(ws, "device_data")
    assert event["device_id"] == "WANTED"
    await ws.send(orjson.dumps({"action": "unsubscribe", "events": ["device_data"]}).decode())
    reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply["events"] == []
    await ws.send(b"garbage".decode())
    err = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert err["type"] == "error"
    await ws.close()


async def test_a_batching_client_gets_every_event_of_a_burst_once_in_order(stack: Stack) -> None:
    device = await stack.device()
    ws = await websockets.connect(stack.ws_url)
    await ws.send(
        orjson.dumps(
            {"action": "subscribe", "events": ["device_data"], "devices": ["BURST"], "batch": True}
        ).decode()
    )
    reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert reply["type"] == "subscribed"
    assert reply["batch"] is True
    count = 300
    for i in range(count):
        device.publish("devices/BURST/data", orjson.dumps({"n": i}))
    seqs: list[int] = []
    while len(seqs) < count:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        for event in frame if isinstance(frame, list) else [frame]:
            assert event["type"] == "device_data", event
            seqs.append(int(event["payload"]["metrics"]["n"]))
    assert seqs == list(range(count))
    await ws.close()


async def test_edits_are_live_and_a_deleted_device_registers_anew(stack: Stack) -> None:
    device = await stack.device()
    device.publish(f"devices/{DEV}/data", b'{"t": 1}')

    async def registered() -> bool:
        return (await stack.http.get(f"/api/devices/{DEV}")).status_code == 200

    await stack.wait_for(registered)
    ws = await _ws(stack, ["device_updated", "device_deleted", "device_registered"], [DEV])
    r = await stack.http.patch(f"/api/devices/{DEV}", json={"name": "Kitchen", "tags": ["home"]})
    assert r.status_code == 200
    # Capabilities learnt from the first reading come as a device_updated of their own.
    updated = await _next_event(ws, "device_updated", where=lambda p: "name" in p)
    assert updated["payload"]["name"] == "Kitchen"
    assert updated["payload"]["tags"] == ["home"]
    bad = await stack.http.patch(f"/api/devices/{DEV}", json={"tags": ["no spaces"]})
    assert bad.status_code == 422
    assert (await stack.http.patch("/api/devices/NOPE", json={"name": "x"})).status_code == 404

    assert (await stack.http.delete(f"/api/devices/{DEV}")).status_code == 204
    await _next_event(ws, "device_deleted")
    assert (await stack.http.get(f"/api/devices/{DEV}")).status_code == 404
    # The worker forgets it: its next message registers it again (with the default name).
    await stack.wait_for(lambda: DEV not in stack.worker.ingestor.known)
    device.publish(f"devices/{DEV}/data", b'{"t": 2}')
    again = await _next_event(ws, "device_registered")
    assert again["payload"]["name"] == "ESP32-B3C4D5"
    await ws.close()

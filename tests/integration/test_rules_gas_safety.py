"""Automations end to end on real parts: a gas spike on the kitchen sensor fires the
gas-safety rule, the fan command goes to the hall device and is acked, the alert is
raised (and published live), then the gas falls, the alert clears itself and the fan
goes off; the rule's fire count arrives live. Also: the rules API round trip and the dry
run over the recorded history."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import websockets

from tests.control_support import FakeDevice
from tests.support import Stack


def gas_rule(fan_device: str) -> dict[str, Any]:
    return {
        "name": "Kitchen gas safety",
        "scope": {"devices": ["GASKITCHEN01"]},
        "trigger": {
            "type": "threshold",
            "metric": "gas",
            "op": "above",
            "value": 400,
            "hysteresis": 100,
        },
        "actions": [
            {"type": "alert", "severity": "critical", "message": "Gas {value} on {device}"},
            {
                "type": "command",
                "device_id": fan_device,
                "command": "relay",
                "params": {"name": "fan", "state": "on"},
            },
            {
                "type": "command",
                "when": "clear",
                "device_id": fan_device,
                "command": "relay",
                "params": {"name": "fan", "state": "off"},
            },
            {"type": "notify", "level": "critical", "message": "Gas alarm on {device}"},
        ],
        "cooldown_seconds": 0,
    }


def fan_commands(dev: FakeDevice) -> list[str]:
    return [c["params"]["state"] for c in dev.received if c["command"] == "relay"]


async def test_gas_spike_fires_fan_and_alert_then_clears(stack: Stack) -> None:
    kitchen = await FakeDevice(stack, "GASKITCHEN01", caps=["gas", "temperature"]).start()
    hall = await FakeDevice(stack, "GASHALL00001", caps=["relay:fan", "relay:light"]).start()
    ws = await websockets.connect(stack.ws_url)
    stack.cleanup.append(ws.close)
    await ws.send(
        orjson.dumps(
            {"action": "subscribe", "events": ["alert", "notification", "rule_fired"]}
        ).decode()
    )
    assert orjson.loads(await ws.recv())["type"] == "subscribed"

    r = await stack.http.post("/api/rules", json=gas_rule(hall.id))
    assert r.status_code == 201, r.text
    rule = r.json()
    assert rule["trigger"]["metric"] == "gas"
    assert rule["enabled"] is True
    engine = stack.worker.automations.engine
    await stack.wait_for(lambda: _true(rule["id"] in engine.rules))

    assert kitchen.client is not None
    data = f"devices/{kitchen.id}/data"
    for value in (90, 120, 650, 700, 680):  # crosses once: one firing, not three
        kitchen.client.publish(data, orjson.dumps({"gas": value}))
        await asyncio.sleep(0.05)  # paced like a sensor's readings

    await stack.wait_for(lambda: _true(fan_commands(hall) == ["on"]))

    async def acked() -> list[dict[str, Any]]:
        rows = (await stack.get(f"/api/devices/{hall.id}/commands"))["data"]
        return [c for c in rows if c["status"] == "acked" and c["source"] == "rule"]

    (command,) = await stack.wait_for(acked)
    assert command["params"] == {"name": "fan", "state": "on"}
    assert hall.state["relays"]["fan"] is True

    alerts = await stack.get("/api/alerts", status="active")
    assert alerts["count"] == 1, alerts
    alert = alerts["data"][0]
    assert (alert["device_id"], alert["severity"], alert["rule_id"]) == (
        kitchen.id,
        "critical",
        rule["id"],
    )
    assert alert["message"] == f"Gas 650 on ESP32-{kitchen.id[-6:]}" or "650" in alert["message"]
    assert alerts["open"] == {"active": 1}

    seen = await _events(ws, 3)
    assert {(e["type"], e["payload"].get("action")) for e in seen} == {
        ("alert", "raised"),
        ("notification", None),
        ("rule_fired", None),
    }
    # The rule list's counters arrive live, the totals as stored.
    (fired,) = [e for e in seen if e["type"] == "rule_fired"]
    assert fired["payload"]["rule_id"] == rule["id"]
    assert fired["payload"]["fire_count"] == 1
    assert fired["payload"]["last_fired_at"] > 0

    for value in (350, 320):  # inside the hysteresis band: still alarmed
        kitchen.client.publish(data, orjson.dumps({"gas": value}))

    async def both_taken() -> bool:
        latest = await stack.get(f"/api/devices/{kitchen.id}/latest")
        return bool(latest["metrics"].get("gas", {}).get("value") == 320)

    await stack.wait_for(both_taken)
    await asyncio.sleep(0.5)  # bounded: a wrong clear would be recorded by now
    assert (await stack.get("/api/alerts", status="active"))["count"] == 1
    kitchen.client.publish(data, orjson.dumps({"gas": 150}))

    async def cleared() -> dict[str, Any] | None:
        got = await stack.get(f"/api/alerts/{alert['id']}")
        return got if got["status"] == "cleared" else None

    done = await stack.wait_for(cleared)
    assert done["cleared_by"] == "auto"
    assert [h["status"] for h in done["history"]] == ["active", "cleared"]
    await stack.wait_for(lambda: _true(fan_commands(hall) == ["on", "off"]))
    await stack.wait_for(lambda: _true(hall.state["relays"]["fan"] is False))

    listed = await stack.get("/api/rules")
    assert listed["count"] == 1
    assert listed["data"][0]["fire_count"] == 1

    # The dry run over what was just recorded finds the same crossing (and its clear).
    r = await stack.http.post(f"/api/rules/{rule['id']}/dry-run", json={"hours": 1})
    assert r.status_code == 200, r.text
    dry = r.json()
    assert [f["kind"] for f in dry["firings"]] == ["fire", "clear"]
    assert dry["firings"][0]["context"]["value"] == 650
    assert dry["samples"] >= 8


async def test_alert_lifecycle_by_hand_and_rule_crud(stack: Stack) -> None:
    dev = await FakeDevice(stack, "ACKDEVICE001", caps=["temperature"]).start()
    body = {
        "name": "Hot",
        "trigger": {"type": "threshold", "metric": "temperature", "value": 30},
        "actions": [{"type": "alert", "severity": "warning", "auto_clear": False}],
        "cooldown_seconds": 0,
    }
    rule = (await stack.http.post("/api/rules", json=body)).json()
    await stack.wait_for(lambda: _true(rule["id"] in stack.worker.automations.engine.rules))
    assert dev.client is not None
    dev.client.publish(f"devices/{dev.id}/data", orjson.dumps({"temperature": 35}))

    async def active() -> list[dict[str, Any]]:
        return list((await stack.get("/api/alerts", status="active", device_id=dev.id))["data"])

    (alert,) = await stack.wait_for(active)
    r = await stack.http.post(f"/api/alerts/{alert['id']}/acknowledge", json={"note": "on it"})
    assert r.status_code == 200, r.text
    acked = r.json()
    assert acked["status"] == "acknowledged"
    assert acked["acknowledged_by"] == "admin"
    again = await stack.http.post(f"/api/alerts/{alert['id']}/acknowledge")
    assert again.status_code == 409
    r = await stack.http.post(f"/api/alerts/{alert['id']}/clear")
    assert r.json()["status"] == "cleared"
    assert r.json()["cleared_by"] == "admin"
    history = await stack.get("/api/alerts", status="cleared", severity="warning")
    assert [a["id"] for a in history["data"]] == [alert["id"]]
    assert (await stack.http.get("/api/alerts/999999")).status_code == 404

    # CRUD and validation
    r = await stack.http.patch(f"/api/rules/{rule['id']}", json={"enabled": False})
    assert r.json()["enabled"] is False
    await stack.wait_for(lambda: _true(rule["id"] not in stack.worker.automations.engine.rules))
    r = await stack.http.put(f"/api/rules/{rule['id']}", json={**body, "name": "Hotter"})
    assert r.json()["name"] == "Hotter"
    assert r.json()["enabled"] is True
    bad = {**body, "trigger": {"type": "schedule", "at": "25:00"}}
    assert (await stack.http.post("/api/rules", json=bad)).status_code == 422
    templates = await stack.get("/api/rules/templates")
    assert {t["id"] for t in templates} >= {"gas_safety", "fan_temperature", "lights_schedule"}
    for t in templates:
        for r_body in t["rules"]:
            r = await stack.http.post("/api/rules/dry-run", json={"rule": r_body, "hours": 1})
            assert r.status_code == 200, (t["id"], r.text)
    assert (await stack.http.delete(f"/api/rules/{rule['id']}")).status_code == 204
    assert (await stack.http.get(f"/api/rules/{rule['id']}")).status_code == 404


async def _true(value: bool) -> bool:
    return value


async def _events(ws: Any, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            out.append(orjson.loads(await ws.recv()))
    return out

"""Rules see every telemetry sample, including a new device's very first one (the
message that registers it): a gas sensor that appears already in alarm raises the alert."""

from __future__ import annotations

from typing import Any

import orjson

from tests.support import Stack


async def _true(value: Any) -> Any:
    return value


async def test_first_sample_of_a_new_device_fires_a_rule(stack: Stack) -> None:
    rule = {
        "name": "Gas alarm",
        "trigger": {"type": "threshold", "metric": "gas", "op": "above", "value": 400},
        "actions": [{"type": "alert", "severity": "critical", "message": "Gas {value}"}],
        "cooldown_seconds": 0,
    }
    r = await stack.http.post("/api/rules", json=rule)
    assert r.status_code == 201, r.text
    rule_id = r.json()["id"]
    engine = stack.worker.automations.engine
    await stack.wait_for(lambda: _true(rule_id in engine.rules))

    device = await stack.device()
    device.publish("devices/NEWGASDEV001/data", orjson.dumps({"gas": 650}))

    async def raised() -> Any:
        alerts = (await stack.get("/api/alerts", rule_id=rule_id))["data"]
        return alerts[0] if alerts else None

    alert = await stack.wait_for(raised)
    assert alert["device_id"] == "NEWGASDEV001"
    assert alert["status"] == "active"
    assert alert["message"] == "Gas 650"

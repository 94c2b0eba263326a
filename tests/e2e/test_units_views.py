"""The device's declared unit outside its own page: the devices table, a threshold
alert's message on the alerts page, and the rule builder (threshold field, dry run), in
real Chromium against a running platform. The device connects in open mode on purpose
(the e2e stack's default), as a plain MQTT client. It declares °F, not the default °C,
so a unit written into the page instead of taken from the API would show up."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.e2e.conftest import navigate, open_logged_in, screenshot
from tests.e2e.test_dashboard import TIMEOUT_MS
from tests.support import Stack

DEVICE = "E2EUNITVIEW1"


async def test_declared_unit_in_table_alert_and_rule_builder(
    e2e_stack: Stack, browser: Any
) -> None:
    stack = e2e_stack
    device = await stack.device(DEVICE)
    info = {"firmware": "1.0.0", "capabilities": ["temperature"], "units": {"temperature": "°F"}}
    device.publish(f"devices/{DEVICE}/info", json.dumps(info), retain=True)

    async def declared() -> bool:
        r = await stack.http.get(f"/api/devices/{DEVICE}")
        return r.status_code == 200 and r.json()["units"].get("temperature") == "°F"

    await stack.wait_for(declared)
    rule = {
        "name": "Too warm",
        "trigger": {"type": "threshold", "metric": "temperature", "op": "above", "value": 86},
        "actions": [{"type": "alert", "severity": "warning"}],  # the default message
        "cooldown_seconds": 0,
    }
    r = await stack.http.post("/api/rules", json=rule)
    assert r.status_code == 201, r.text
    rule_id: int = r.json()["id"]

    async def loaded() -> bool:
        engine = stack.worker.automations.engine
        known = engine.devices.get(DEVICE)
        return rule_id in engine.rules and known is not None and known.units["temperature"] == "°F"

    await stack.wait_for(loaded)

    # The table's readings arrive live, so the page is open before the device reports.
    page = await open_logged_in(browser, stack, "/devices")
    row = page.locator(f"[data-device='{DEVICE}']")
    await row.wait_for(timeout=TIMEOUT_MS)
    now = time.time()
    for k, value in enumerate((80, 91.5)):
        device.publish(
            f"devices/{DEVICE}/data", json.dumps({"temperature": value, "ts": now - 2 + k})
        )
    readings = row.get_by_test_id("latest-readings")
    await readings.get_by_text("temperature 91.5 °F").wait_for(timeout=TIMEOUT_MS)
    assert "°C" not in await readings.inner_text()

    async def alerted() -> bool:
        r = await stack.http.get("/api/alerts", params={"status": "active"})
        return any(a["rule_id"] == rule_id for a in r.json()["data"])

    await stack.wait_for(alerted)
    await navigate(page, "/alerts")
    message = "temperature 91.5 °F > 86 °F"  # after "Too warm: <device name> "
    alert_row = page.locator(".ant-table-row", has_text="Too warm")
    await alert_row.wait_for(timeout=TIMEOUT_MS)
    assert message in await alert_row.inner_text(), await alert_row.inner_text()

    # A page opened after the device reported shows its stored readings at once, before
    # any live one.
    async def stored() -> bool:
        fleet = await stack.get("/api/latest", devices=DEVICE)
        return fleet["data"].get(DEVICE, {}).get("temperature", {}).get("value") == 91.5

    await stack.wait_for(stored)
    fresh = await open_logged_in(browser, stack, "/devices")
    shown = fresh.locator(f"[data-device='{DEVICE}']").get_by_test_id("latest-readings")
    await shown.get_by_text("temperature 91.5 °F").wait_for(timeout=TIMEOUT_MS)
    await fresh.close()

    await navigate(page, "/automations")
    await (
        page.locator(".ant-table-row", has_text="Too warm")
        .get_by_role("button", name="Edit")
        .click()
    )
    threshold = page.locator(".ant-form-item", has_text="Threshold")
    await threshold.locator(".ant-input-number-suffix", has_text="°F").wait_for(timeout=TIMEOUT_MS)
    await page.get_by_role("button", name="Dry run").click()
    result = page.get_by_test_id("dry-run")
    await result.get_by_text("91.5 °F").wait_for(timeout=2 * TIMEOUT_MS)
    await screenshot(page, "units-rule-builder")
    assert not page.errors, page.errors
    await page.close()

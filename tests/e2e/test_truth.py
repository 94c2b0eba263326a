"""The dashboard tells the truth: times, sources, overview figures, units, forms that end,
history ranges, webhook targets and no dead ends, in real Chromium against a running
platform. Devices connect in open mode on purpose (the e2e stack's default), as
simulated ESP32s (the firmware's own logic) or as plain MQTT clients."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.e2e.conftest import navigate, open_logged_in, screenshot
from tests.e2e.test_dashboard import TIMEOUT_MS, fleet
from tests.support import Stack

TWELVE_HOUR = re.compile(r"\d{1,2}:\d{2}(:\d{2})?\s?[AP]M")


async def _gas_alert_rule(stack: Stack) -> int:
    rule = {
        "name": "Gas alarm",
        "trigger": {"type": "threshold", "metric": "gas", "op": "above", "value": 400},
        "actions": [{"type": "alert", "severity": "critical", "message": "Gas {value}"}],
        "cooldown_seconds": 0,
    }
    r = await stack.http.post("/api/rules", json=rule)
    assert r.status_code == 201, r.text
    rule_id: int = r.json()["id"]

    async def loaded() -> bool:
        return rule_id in stack.worker.automations.engine.rules

    await stack.wait_for(loaded)
    return rule_id


async def test_live_updates_keep_real_times_and_commands_show_their_source(
    e2e_stack: Stack, browser: Any
) -> None:
    async with fleet(e2e_stack) as sim:
        node = sim.devices[0]
        page = await open_logged_in(browser, e2e_stack, f"/devices/{node.node_id}")
        await page.get_by_role("tab", name="Control").click()
        panel = page.get_by_test_id("control-panel")
        await panel.wait_for(timeout=TIMEOUT_MS)
        relay = next(iter(node.hal.relays))
        switch = panel.get_by_role("switch", name=relay)
        for _ in range(2):  # two commands, each updated live up to its ack
            before = len(await page.get_by_text("acknowledged by the device").all())
            await switch.click()
            await page.wait_for_function(
                "n => [...document.querySelectorAll('.ant-message-notice')]"
                ".filter(e => e.textContent.includes('acknowledged by the device')).length > n",
                arg=before,
                timeout=TIMEOUT_MS,
            )
        await page.get_by_role("tab", name="Commands").click()
        history = page.get_by_test_id("command-history")
        await history.get_by_text("acked").nth(1).wait_for(timeout=TIMEOUT_MS)
        rows = history.locator(".ant-table-row")
        assert await rows.count() == 2
        text = await history.inner_text()
        assert "NaN" not in text, text
        # Newest first: the second toggle set the relay to its current state.
        state = "on" if node.hal.relays[relay] else "off"
        first = await rows.nth(0).inner_text()
        assert f'"state":"{state}"' in first.replace(" ", ""), first
        # Who sent it: a signed-in user (not an API key, not a rule).
        assert await history.locator("td", has_text=re.compile(r"^user$")).count() == 2
        await screenshot(page, "device-commands-live")

        # An alert raised while the Alerts page is open, then acknowledged there.
        await _gas_alert_rule(e2e_stack)
        await navigate(page, "/alerts")
        await page.get_by_role("heading", name="Alerts").wait_for(timeout=TIMEOUT_MS)
        device = await e2e_stack.device("E2EGAS0001")
        device.publish("devices/E2EGAS0001/data", json.dumps({"gas": 650}))
        row = page.locator(".ant-table-row", has_text="Gas 650")
        await row.wait_for(timeout=TIMEOUT_MS)
        await row.get_by_role("button", name="Acknowledge").click()
        await row.get_by_text("acknowledged", exact=True).wait_for(timeout=TIMEOUT_MS)
        table_text = await page.locator(".ant-table").inner_text()
        assert "NaN" not in table_text, table_text
        assert "just now" in table_text or " s ago" in table_text, table_text
        # Its history, with 24-hour times.
        await row.locator(".ant-table-row-expand-icon").click()
        timeline = page.locator(".ant-timeline")
        await timeline.wait_for(timeout=TIMEOUT_MS)
        timeline_text = await timeline.inner_text()
        assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", timeline_text), timeline_text
        assert not TWELVE_HOUR.search(timeline_text), timeline_text
        await screenshot(page, "alerts-acknowledged")
        assert not page.errors, page.errors

"""The dashboard tells the truth: times, sources, overview figures, units, forms that end,
history ranges, webhook targets and no dead ends, in real Chromium against a running
platform. Devices connect in open mode on purpose (the e2e stack's default), as
simulated ESP32s (the firmware's own logic) or as plain MQTT clients."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from tests.e2e.conftest import navigate, open_logged_in, screenshot
from tests.e2e.test_dashboard import TIMEOUT_MS, fleet
from tests.support import OPEN, Stack, run_stack

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
            expected = "false" if await switch.get_attribute("aria-checked") == "true" else "true"
            await switch.click()
            # The device's reported state follows its ack; the switch stops spinning.
            await page.wait_for_function(
                "([id, want]) => { const s = document.querySelector(`[data-testid='relay-${id}']`);"
                " return s && s.getAttribute('aria-checked') === want"
                " && !s.classList.contains('ant-switch-loading'); }",
                arg=[relay, expected],
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


async def test_overview_shows_alerts_history_and_activity_that_survive_a_reload(
    tmp_path: Any, browser: Any
) -> None:
    # Samples every second (a minute by default) so the charts fill during the test.
    async with (
        run_stack(
            "embedded-sqlite",
            tmp_path,
            mode=OPEN,
            offline_min_seconds=1.0,
            maintenance_interval_seconds=1.0,
        ) as stack,
        fleet(stack, devices=2) as sim,
    ):
        await _gas_alert_rule(stack)
        device = await stack.device("E2EGAS0002")
        device.publish("devices/E2EGAS0002/data", json.dumps({"gas": 700}))
        node = sim.devices[0]
        relay = next(iter(node.hal.relays))
        r = await stack.http.post(
            f"/api/devices/{node.node_id}/commands?wait=true",
            json={"command": "relay", "params": {"name": relay, "state": "on"}},
        )
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "acked", r.text
        command_id = r.json()["id"]

        async def sampled() -> bool:  # two samples: the chart has a rate to draw
            r = await stack.http.get("/api/stats/history", params={"window": "1h"})
            return len(r.json()["points"]) >= 2

        # The 1 h chart keeps one sample per window / HISTORY_MAX_POINTS (12 s) however
        # often the leader samples, so its second point comes 12 s after the first.
        await stack.wait_for(sampled, timeout=12 + 30)
        page = await open_logged_in(browser, stack, "/")
        tile = page.get_by_test_id("alerts-tile")
        await tile.get_by_text("1 critical").wait_for(timeout=TIMEOUT_MS)
        await (
            page.get_by_test_id("menu-alert-count")
            .get_by_text("1")
            .first.wait_for(timeout=TIMEOUT_MS)
        )
        # One line per command, in its final state, from the server: still there after a
        # reload (not only what happened since the page opened).
        for attempt in range(2):
            activity = page.get_by_test_id("activity")
            line = activity.locator(f"[data-key='command:{command_id}']")
            await line.get_by_text("acked").wait_for(timeout=TIMEOUT_MS)
            assert await line.count() == 1
            text = await activity.inner_text()
            assert text.count(f"command relay {relay} on") == 1, text
            assert "registered" in text, text
            assert "critical alert" in text, text
            if attempt == 0:
                await page.reload()
        # Devices online and messages/s over time, from the recorded samples.
        await page.wait_for_function(
            "() => Number(document.querySelector('[data-testid=history-online]')"
            "?.dataset.points) >= 2",
            timeout=TIMEOUT_MS,
        )
        await screenshot(page, "overview-truth")
        await tile.get_by_text("1 critical").click()
        await page.wait_for_url("**/alerts?severity=critical")
        await page.locator(".ant-table-row", has_text="Gas 700").wait_for(timeout=TIMEOUT_MS)
        assert not page.errors, page.errors


async def test_history_axis_spans_the_chosen_range_and_custom_needs_dates(
    e2e_stack: Stack, browser: Any
) -> None:
    device = await e2e_stack.device("E2EAXIS0001")
    now = time.time()
    for k in range(3):  # two minutes of data, at the end of every range
        device.publish(
            "devices/E2EAXIS0001/data",
            json.dumps({"temperature": 20.5 + k, "ts": now - 120 + 60 * k}),
        )

    async def stored() -> bool:
        r = await e2e_stack.http.get(
            "/api/devices/E2EAXIS0001/telemetry", params={"since": str(now - 600)}
        )
        return r.status_code == 200 and len(r.json()["series"].get("temperature", [])) >= 3

    await e2e_stack.wait_for(stored)
    page = await open_logged_in(browser, e2e_stack, "/devices/E2EAXIS0001")
    await page.get_by_role("tab", name="History").click()
    chart = page.get_by_test_id("history-chart")
    spans = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
    for label, seconds in spans.items():
        if label != "1h":
            await page.get_by_test_id("range").get_by_text(label, exact=True).click()
        await page.wait_for_function(
            "s => { const el = document.querySelector('[data-testid=history-chart]');"
            " return el && Math.abs((el.dataset.to - el.dataset.from) / 1000 - s) < 5; }",
            arg=seconds,
            timeout=TIMEOUT_MS,
        )
        tick_values = chart.locator(
            ".recharts-xAxis-tick-labels .recharts-cartesian-axis-tick-value"
        )
        await tick_values.first.wait_for(timeout=TIMEOUT_MS)
        ticks = await tick_values.all_text_contents()
        # Ticks across the whole range, each label once.
        assert len(ticks) >= 4, (label, ticks)
        assert len(set(ticks)) == len(ticks), (label, ticks)
        await screenshot(page, f"device-history-{label}")
    await page.get_by_test_id("range").get_by_text("custom", exact=True).click()
    await page.get_by_test_id("custom-empty").wait_for(timeout=TIMEOUT_MS)
    assert await chart.count() == 0  # not the previous range's chart
    assert await page.get_by_test_id("csv").count() == 0  # nor its CSV
    await screenshot(page, "device-history-custom")
    assert not page.errors, page.errors


async def test_header_names_the_user_after_a_reload_with_a_labelled_logout(
    e2e_stack: Stack, browser: Any
) -> None:
    page = await open_logged_in(browser, e2e_stack, "/")
    user = page.get_by_test_id("user")
    await user.get_by_text("admin (admin)").wait_for(timeout=TIMEOUT_MS)
    await page.reload()
    await user.get_by_text("admin (admin)").wait_for(timeout=TIMEOUT_MS)
    logout = page.get_by_role("button", name="Log out")
    assert "Log out" in await logout.inner_text()
    await logout.click()
    await page.wait_for_url("**/login**")
    assert not page.errors, page.errors

"""Units in every view and forms that refuse with a reason, in real Chromium against a
running platform. Devices connect in open mode on purpose (the e2e stack's default), as
plain MQTT clients that say what a device built to the protocol would."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.control_support import FakeDevice, small_bundle
from tests.e2e.conftest import navigate, open_logged_in, pick, screenshot
from tests.e2e.test_dashboard import TIMEOUT_MS, fleet
from tests.support import OPEN, Stack, run_stack

UNITS_DEV = "E2EUNIT0001"


async def _device_with_data(stack: Stack, device_id: str, info: dict[str, Any]) -> None:
    device = await stack.device(device_id)
    device.publish(f"devices/{device_id}/info", json.dumps(info), retain=True)
    now = time.time()
    for k in range(3):
        device.publish(
            f"devices/{device_id}/data",
            json.dumps({"temperature": 21.5 + k, "humidity": 40, "gas": 80, "ts": now - 20 + k}),
        )

    async def stored() -> bool:
        r = await stack.http.get(f"/api/devices/{device_id}/telemetry")
        return r.status_code == 200 and len(r.json()["series"].get("temperature", [])) >= 3

    await stack.wait_for(stored)


async def test_units_on_values_axes_and_history(e2e_stack: Stack, browser: Any) -> None:
    # As the firmware declares them: °C and %, gas a raw level without a unit.
    await _device_with_data(
        e2e_stack,
        UNITS_DEV,
        {
            "firmware": "1.0.0",
            "capabilities": ["temperature", "humidity", "gas"],
            "units": {"temperature": "°C", "humidity": "%", "gas": ""},
        },
    )
    page = await open_logged_in(browser, e2e_stack, f"/devices/{UNITS_DEV}")
    live = page.get_by_test_id("live-chart-temperature")
    await live.wait_for(timeout=TIMEOUT_MS)
    value = page.get_by_test_id("live-value-temperature")
    await value.get_by_text("°C").wait_for(timeout=TIMEOUT_MS)
    # The reading as reported (23.5), not padded to two decimals.
    assert "23.5" in await value.inner_text()
    assert "23.50" not in await value.inner_text()
    ticks = live.locator(".recharts-yAxis-tick-labels .recharts-cartesian-axis-tick-value")
    await ticks.first.wait_for(timeout=TIMEOUT_MS)
    assert all(t.endswith("°C") for t in await ticks.all_text_contents())
    gas = page.get_by_test_id("live-value-gas")
    gas_text = await gas.inner_text()
    assert "°" not in gas_text
    assert "%" not in gas_text
    humidity_ticks = page.get_by_test_id("live-chart-humidity").locator(
        ".recharts-yAxis-tick-labels .recharts-cartesian-axis-tick-value"
    )
    assert all(t.endswith("%") for t in await humidity_ticks.all_text_contents())
    await screenshot(page, "device-live-units")

    await page.get_by_role("tab", name="History").click()
    chart = page.get_by_test_id("history-chart")
    await chart.wait_for(timeout=TIMEOUT_MS)
    assert not await chart.get_attribute("data-unit")  # gas, first by name: no unit
    await page.get_by_label("Metric").click()
    await (
        page.locator(".ant-select-dropdown:visible .ant-select-item-option")
        .get_by_text("temperature (°C)", exact=True)
        .click()
    )
    await page.wait_for_function(
        "() => document.querySelector('[data-testid=history-chart]')?.dataset.unit === '°C'",
        timeout=TIMEOUT_MS,
    )
    history_ticks = chart.locator(".recharts-yAxis-tick-labels .recharts-cartesian-axis-tick-value")
    await history_ticks.first.wait_for(timeout=TIMEOUT_MS)
    texts = await history_ticks.all_text_contents()
    assert texts
    assert all(t.endswith("°C") for t in texts), texts
    await screenshot(page, "device-history-units")
    assert not page.errors, page.errors


DECODE_ERROR = "bad bundle: 'utf-8' codec can't decode byte 0x8b in position 1: invalid start byte"


async def test_no_dead_ends(e2e_stack: Stack, browser: Any) -> None:
    stack = e2e_stack
    page = await open_logged_in(browser, stack, "/no/such/page")
    # An unknown address says so (not a silent redirect to the overview).
    await page.get_by_test_id("not-found").get_by_text("/no/such/page").wait_for(timeout=TIMEOUT_MS)
    await screenshot(page, "not-found")
    # An unknown device: its 404 result, and no second error pop-up.
    await navigate(page, "/devices/NOSUCHDEVICE1")
    await page.get_by_text("No such device").wait_for(timeout=TIMEOUT_MS)
    await page.wait_for_load_state("networkidle")
    assert await page.locator(".ant-notification-notice").count() == 0

    # A device that fails its update with a raw decode error, then goes offline.
    device = FakeDevice(stack, "E2EDEAD0001", mode="silent")
    device.on_command = lambda cmd: (
        device.ack(cmd["id"], "error", error=DECODE_ERROR) if cmd["command"] == "ota" else None
    )
    await device.start()
    r = await stack.http.post(
        "/api/firmware",
        params={"version": "2.0.0"},
        content=small_bundle("2.0.0"),
        headers={"content-type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text

    # Rename with a blank name: refused, with the reason.
    await navigate(page, "/devices")
    await page.get_by_role("button", name="Rename").first.click()
    await page.get_by_label("Device name").fill("   ")
    await page.get_by_role("button", name="Save").click()
    await page.get_by_test_id("rename-problem").wait_for(timeout=TIMEOUT_MS)
    await page.get_by_role("button", name="Cancel").click()

    # Upload without a file: refused, with the reason.
    await navigate(page, "/firmware")
    await page.get_by_role("button", name="Upload").first.click()
    await page.locator(".ant-modal-footer").get_by_role("button", name="Upload").click()
    await page.get_by_test_id("upload-problem").wait_for(timeout=TIMEOUT_MS)
    await page.locator(".ant-modal-footer").get_by_role("button", name="Cancel").click()

    # A rollout: the threshold in %, a confirmation, then a readable failure.
    await page.get_by_role("button", name="Roll out").click()
    dialog = page.locator(".ant-modal", has_text="Roll out 2.0.0")
    assert await dialog.get_by_label("Failure threshold in percent").input_value() == "20"
    await dialog.get_by_text("%", exact=True).first.wait_for(timeout=TIMEOUT_MS)
    await dialog.locator(".ant-select").first.click()
    await page.locator(".ant-select-dropdown:visible .ant-select-item-option").first.click()
    await page.keyboard.press("Escape")
    await dialog.get_by_role("button", name="Start").click()
    confirm = page.locator(".ant-modal-confirm")
    await confirm.locator(".ant-modal-confirm-title", has_text="Start rolling out 2.0.0?").wait_for(
        timeout=TIMEOUT_MS
    )
    await screenshot(page, "rollout-confirm")
    await confirm.get_by_role("button", name="Back").click()
    assert (await stack.get("/api/rollouts"))["count"] == 0  # nothing started on "Back"
    await dialog.get_by_role("button", name="Start").click()
    await confirm.get_by_role("button", name="Start rollout").click()

    async def failed() -> bool:
        rollouts = (await stack.get("/api/rollouts"))["data"]
        return bool(rollouts) and rollouts[0]["status"] != "running"

    await stack.wait_for(failed, timeout=30)
    await page.reload()
    rollout = page.locator(".ant-table-row", has_text="2.0.0").last
    await rollout.locator(".ant-table-row-expand-icon").click()
    error = page.get_by_test_id("rollout-device-error").first
    await error.get_by_text("could not read the bundle").wait_for(timeout=TIMEOUT_MS)
    assert "0x8b" not in await page.locator(".ant-card", has_text="Rollouts").inner_text()
    await screenshot(page, "rollouts-readable")

    # Offline: the relay command waits for the device, and the page says so.
    await device.stop()

    async def offline() -> bool:
        return bool((await stack.get("/api/devices/E2EDEAD0001"))["status"] == "offline")

    await stack.wait_for(offline)
    await navigate(page, "/devices/E2EDEAD0001")
    await page.get_by_role("tab", name="Control").click()
    await page.get_by_test_id("relay-light").click()
    waits = page.get_by_test_id("command-waits")
    await waits.get_by_text("offline").first.wait_for(timeout=TIMEOUT_MS)
    assert "goes out when the device connects again" in await waits.inner_text()
    await screenshot(page, "relay-offline-waits")

    # Events in words, not JSON.
    await page.get_by_role("tab", name="Events").click()
    events = page.get_by_test_id("events")
    await events.get_by_text("Went offline").first.wait_for(timeout=TIMEOUT_MS)
    text = await events.inner_text()
    assert "Registered" in text, text
    assert "{" not in text, text
    await screenshot(page, "device-events")
    assert not page.errors, page.errors


async def test_webhooks_explain_lan_targets(e2e_stack: Stack, browser: Any) -> None:
    # Private targets not allowed (the default): the form says why, before sending.
    page = await open_logged_in(browser, e2e_stack, "/webhooks")
    await page.get_by_role("button", name="New webhook").click()
    dialog = page.locator(".ant-modal", has_text="New webhook")
    await dialog.get_by_label("Name").fill("node-red")
    for target in ("http://127.0.0.1:9/", "http://192.168.1.20:1880/iotp"):
        await dialog.get_by_label("URL").fill(target)
        await dialog.get_by_role("button", name="Create").click()
        host = target.split("/")[2].split(":")[0]
        explain = dialog.locator(".ant-form-item-explain-error", has_text=f"{host} is on")
        await explain.wait_for(timeout=TIMEOUT_MS)
        assert "IOTP_WEBHOOK_ALLOW_PRIVATE" in await explain.inner_text()
        assert "an http:// or https:// URL" not in await dialog.inner_text()
    assert await page.locator(".ant-notification-notice-error").count() == 0
    assert (await e2e_stack.get("/api/webhooks"))["count"] == 0
    await screenshot(page, "webhook-lan-refused")
    assert not page.errors, page.errors


async def test_webhooks_on_the_lan_retry_with_next_try_and_live_health(
    tmp_path: Any, browser: Any
) -> None:
    # Private targets allowed, as next to Node-RED or Home Assistant; the target (the
    # discard port on loopback) refuses connections, so deliveries are retried.
    async with run_stack(
        "embedded-sqlite",
        tmp_path,
        mode=OPEN,
        webhook_allow_private=True,
        webhook_backoff_seconds=60.0,
    ) as stack:
        page = await open_logged_in(browser, stack, "/webhooks")
        await page.get_by_role("button", name="New webhook").click()
        dialog = page.locator(".ant-modal", has_text="New webhook")
        await dialog.get_by_label("Name").fill("node-red")
        await dialog.get_by_label("URL").fill("http://127.0.0.1:9/")
        await (
            dialog.get_by_test_id("lan-note")
            .get_by_text("this machine")
            .wait_for(timeout=TIMEOUT_MS)
        )
        await dialog.locator(".ant-select").first.click()
        await (
            page.locator(".ant-select-dropdown:visible .ant-select-item-option")
            .get_by_text("device_registered", exact=True)
            .click()
        )
        await page.keyboard.press("Escape")
        await dialog.get_by_role("button", name="Create").click()
        await page.get_by_role("button", name="I have stored it").click()
        hook = (await stack.get("/api/webhooks"))["data"][0]
        health = page.get_by_test_id(f"health-{hook['id']}")
        await health.get_by_text("no deliveries yet").wait_for(timeout=TIMEOUT_MS)

        async def subscribed() -> bool:  # the worker holds the new webhook
            return any(sub.webhook_id == hook["id"] for sub in stack.worker.automations._subs)

        await stack.wait_for(subscribed)
        # A device registers: its delivery fails and waits for a retry; the page, left
        # open, shows the failure without a reload.
        device = await stack.device("E2EHOOK0001")
        device.publish("devices/E2EHOOK0001/data", json.dumps({"temperature": 20.5}))

        async def failed_once() -> bool:
            hooks = (await stack.get("/api/webhooks"))["data"]
            return bool(hooks[0]["consecutive_failures"] >= 1)

        # The platform's attempt first (a loaded machine may take a while), then the page:
        # it shows the failure by itself within a few polls.
        await stack.wait_for(failed_once, timeout=60)
        await health.get_by_text("failures in a row").wait_for(timeout=TIMEOUT_MS)
        await page.get_by_role("button", name="Deliveries").click()
        next_try = page.get_by_test_id("next-try").first
        await next_try.wait_for(timeout=TIMEOUT_MS)
        assert (await next_try.inner_text()).startswith("in "), await next_try.inner_text()
        await screenshot(page, "webhook-deliveries-next-try")
        assert not page.errors, page.errors


async def test_bulk_command_checks_first_and_follows_each_device_to_its_ack(
    e2e_stack: Stack, browser: Any
) -> None:
    async with fleet(e2e_stack, devices=2) as sim:
        page = await open_logged_in(browser, e2e_stack, "/devices")
        for node in sim.devices:
            row = page.locator(".ant-table-row", has_text=node.node_id)
            await row.locator(".ant-checkbox-input").check()
        await page.get_by_role("button", name="Send command").click()
        dialog = page.locator(".ant-modal", has_text="Command to 2 device(s)")
        send = dialog.get_by_role("button", name="Send")
        # Invalid JSON: said at once, nothing sent, the button not left spinning.
        await pick(page, dialog.get_by_label("Command", exact=True), "custom")
        await dialog.get_by_label("Custom command JSON").fill('{"command": "beep", ')
        await send.click()
        await (
            dialog.get_by_test_id("bulk-problem")
            .get_by_text("Not valid JSON")
            .wait_for(timeout=TIMEOUT_MS)
        )
        assert "ant-btn-loading" not in (await send.get_attribute("class") or "")
        # The relay picked from what the devices declare, then one result per device,
        # followed to the device's ack.
        await pick(page, dialog.get_by_label("Command", exact=True), "relay")
        assert await dialog.get_by_test_id("bulk-problem").count() == 0
        relay = next(iter(sim.devices[0].hal.relays))
        await pick(page, dialog.get_by_label("Relay name"), relay)
        await send.click()
        results = dialog.get_by_test_id("bulk-results")
        for node in sim.devices:
            cell = results.locator(f"[data-device='{node.node_id}']")
            await cell.get_by_text("acked").wait_for(timeout=TIMEOUT_MS)
        await screenshot(page, "bulk-command-acked")
        assert not page.errors, page.errors

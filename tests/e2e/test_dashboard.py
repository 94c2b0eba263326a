"""The dashboard in real Chromium against a running platform with simulated devices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from iotp.simulator.fleet import Fleet
from tests.e2e.conftest import navigate, open_logged_in, screenshot
from tests.support import Stack

TIMEOUT_MS = 15_000


@contextlib.asynccontextmanager
async def fleet(stack: Stack, devices: int = 1, interval: float = 0.5) -> AsyncIterator[Fleet]:
    """Simulated ESP32s running the real firmware logic."""
    sim = Fleet(devices=devices, broker_url=stack.mqtt_url, interval=interval, id_prefix="E2E")
    # Workaround: the worker drops a device's info when it arrives while the device's
    # registration (triggered by its retained status) is still in flight, so register
    # the ids first. Remove once the worker applies info after a pending registration.
    pre = await stack.device()
    for sim_device in sim.devices:
        pre.publish(f"devices/{sim_device.node_id}/data", json.dumps({"note": "e2e"}))
    for sim_device in sim.devices:
        await stack.wait_for(lambda d=sim_device.node_id: _exists(stack, d))
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(sim.run(stop=stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield sim
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)


def row(page: Any, device_id: str) -> Any:
    return page.locator(f".ant-table-row:has-text('{device_id}')")


async def test_new_device_appears_then_goes_offline_without_reload(
    e2e_stack: Stack, browser: Any
) -> None:
    page = await open_logged_in(browser, e2e_stack, "/devices")
    # No devices yet: the empty state tells how to connect one, with the broker port.
    help_card = page.get_by_test_id("connect-help")
    await help_card.wait_for(timeout=TIMEOUT_MS)
    port = e2e_stack.mqtt_url.rsplit(":", 1)[1]
    # The broker address comes from GET /api/info.
    await help_card.get_by_text(f"-p {port} -q 1 -t devices/").wait_for(timeout=TIMEOUT_MS)
    await screenshot(page, "devices-empty")

    device = await e2e_stack.device("E2EPLAIN0001")
    device.publish(
        "devices/E2EPLAIN0001/info",
        json.dumps({"type": "e2e-sensor", "firmware": "9.9.9", "interval": 0.5}),
        retain=True,
    )
    for i in range(3):
        device.publish("devices/E2EPLAIN0001/data", json.dumps({"temperature": 20 + i}))
        await asyncio.sleep(0.3)  # paced like a sensor's readings
    the_row = row(page, "E2EPLAIN0001")
    await the_row.wait_for(timeout=TIMEOUT_MS)
    await the_row.locator("text=online").wait_for(timeout=TIMEOUT_MS)
    assert "e2e-sensor" in await the_row.inner_text()
    # It stops reporting: the platform marks it offline and the table follows, live.
    await the_row.locator("text=offline").wait_for(timeout=TIMEOUT_MS)
    await screenshot(page, "devices-offline")
    assert not page.errors


async def test_live_chart_moves_and_history_range_changes(e2e_stack: Stack, browser: Any) -> None:
    device = await e2e_stack.device("E2EHIST0001")
    now = time.time()
    # Older readings, so that each history range holds a different amount of data.
    for ts, value in ((now - 3 * 3600, 10.0), (now - 2 * 86400, 5.0), (now - 20 * 86400, 1.0)):
        device.publish("devices/E2EHIST0001/data", json.dumps({"temperature": value, "ts": ts}))
    device.publish("devices/E2EHIST0001/data", json.dumps({"temperature": 21.0}))
    await e2e_stack.wait_for(lambda: _count(e2e_stack, "E2EHIST0001", now - 30 * 86400), timeout=10)

    page = await open_logged_in(browser, e2e_stack, "/devices/E2EHIST0001")
    chart = page.get_by_test_id("live-chart-temperature")
    await chart.wait_for(timeout=TIMEOUT_MS)
    before = int(await chart.get_attribute("data-points") or 0)
    for i in range(4):
        device.publish("devices/E2EHIST0001/data", json.dumps({"temperature": 22.0 + i}))
        await asyncio.sleep(0.4)  # paced like a sensor's readings: a point each
    await page.wait_for_function(
        """([before]) => {
            const el = document.querySelector('[data-testid="live-chart-temperature"]');
            return el && Number(el.dataset.points) >= before + 3;
        }""",
        arg=[before],
        timeout=TIMEOUT_MS,
    )
    assert await chart.locator("path.recharts-curve").count() >= 1
    await screenshot(page, "device-live")

    history = page.get_by_test_id("history-chart")
    first: dict[str, float] = {}
    for label in ("1h", "24h", "7d", "30d"):
        async with page.expect_response(
            lambda r: "/telemetry?" in r.url and "bucket=auto" in r.url
        ):
            if label == "1h":  # the default range, loaded when the tab opens
                await page.get_by_role("tab", name="History").click()
            else:
                await page.get_by_test_id("range").get_by_text(label, exact=True).click()
        await history.wait_for(timeout=TIMEOUT_MS)
        await page.wait_for_timeout(300)
        first[label] = float(await history.get_attribute("data-first-t") or 0)
    # 1 h: only the recent readings; each longer range reaches one older reading.
    assert first["1h"] > first["24h"] > first["7d"] > first["30d"] > 0, first
    assert first["1h"] > (now - 3600) * 1000
    assert first["30d"] < (now - 19 * 86400) * 1000
    assert await history.locator(".recharts-area").count() == 1  # the min..max band
    await screenshot(page, "device-history")
    assert not page.errors


async def _count(stack: Stack, device_id: str, since: float) -> bool:
    response = await stack.http.get(
        f"/api/devices/{device_id}/telemetry", params={"since": str(since)}
    )
    if response.status_code != 200:
        return False  # not registered yet
    return len(response.json()["series"].get("temperature", [])) >= 4


async def test_relay_and_servo_reach_the_simulated_device(e2e_stack: Stack, browser: Any) -> None:
    async with fleet(e2e_stack) as sim:
        node = sim.devices[0]
        page = await open_logged_in(browser, e2e_stack, f"/devices/{node.node_id}")
        await page.get_by_role("tab", name="Control").click()
        panel = page.get_by_test_id("control-panel")
        await panel.wait_for(timeout=TIMEOUT_MS)
        relay_name = next(iter(node.hal.relays))
        switch = panel.get_by_role("switch", name=relay_name)
        was_on = node.hal.relays[relay_name]
        await switch.click()
        # The device's own acknowledgement comes back, and its reported state follows.
        await page.get_by_text("acknowledged by the device").first.wait_for(timeout=TIMEOUT_MS)
        assert node.hal.relays[relay_name] is (not was_on)
        expected = "true" if not was_on else "false"
        await (
            panel.locator(f"button[role=switch][aria-checked={expected}]")
            .filter(has_not_text="__")
            .first.wait_for(timeout=TIMEOUT_MS)
        )
        assert await switch.get_attribute("aria-checked") == expected

        await page.get_by_label("Servo angle value").fill("135")
        await page.get_by_role("button", name="Set", exact=True).click()
        await page.wait_for_function(
            "() => [...document.querySelectorAll('.ant-card-head-title')]"
            ".some(e => e.textContent === 'Servo: 135°')",
            timeout=TIMEOUT_MS,
        )
        assert node.hal.servo_target == 135
        await screenshot(page, "device-control")

        await page.get_by_role("tab", name="Commands").click()
        history = page.get_by_test_id("command-history")
        await history.get_by_text("acked").first.wait_for(timeout=TIMEOUT_MS)
        await screenshot(page, "device-commands")
        assert not page.errors


async def test_viewer_sees_no_controls(e2e_stack: Stack, browser: Any) -> None:
    response = await e2e_stack.http.post(
        "/api/users", json={"username": "watcher", "password": "watcher-password", "role": "viewer"}
    )
    assert response.status_code in (200, 201), response.text
    device = await e2e_stack.device("E2EVIEW0001")
    device.publish(
        "devices/E2EVIEW0001/info",
        json.dumps({"type": "esp32-env", "capabilities": ["temperature", "relay:light", "servo"]}),
        retain=True,
    )
    device.publish("devices/E2EVIEW0001/data", json.dumps({"temperature": 20.0}))
    await e2e_stack.wait_for(lambda: _exists(e2e_stack, "E2EVIEW0001"))
    page = await open_logged_in(
        browser, e2e_stack, "/devices/E2EVIEW0001", username="watcher", password="watcher-password"
    )
    await page.get_by_test_id("device-name").wait_for(timeout=TIMEOUT_MS)
    assert await page.get_by_role("tab", name="Control").count() == 0
    assert await page.get_by_role("switch", name="light").count() == 0
    await navigate(page, "/devices")
    await page.get_by_text("E2EVIEW0001").wait_for(timeout=TIMEOUT_MS)
    assert await page.locator(".ant-table-selection-column").count() == 0  # no bulk select
    assert await page.get_by_role("button", name="Delete").count() == 0


async def _exists(stack: Stack, device_id: str) -> bool:
    response = await stack.http.get(f"/api/devices/{device_id}")
    return response.status_code == 200


async def test_main_pages_render_and_work_at_phone_width(e2e_stack: Stack, browser: Any) -> None:
    async with fleet(e2e_stack, devices=3):
        page = await open_logged_in(browser, e2e_stack, "/")
        await page.get_by_test_id("stat-total").wait_for(timeout=TIMEOUT_MS)
        await page.wait_for_function(
            "() => document.querySelector('[data-testid=stat-total]')?.textContent.includes('3')",
            timeout=TIMEOUT_MS,
        )
        await page.get_by_test_id("connection").get_by_text("live").wait_for(timeout=TIMEOUT_MS)
        await screenshot(page, "overview")
        await page.get_by_role("link", name="Devices").first.click()
        await page.get_by_test_id("device-count").wait_for(timeout=TIMEOUT_MS)
        await screenshot(page, "devices")
        await page.get_by_role("link", name="Firmware").first.click()
        await page.get_by_role("heading", name="Firmware").wait_for(timeout=TIMEOUT_MS)
        await screenshot(page, "firmware")
        await page.get_by_role("switch", name="Dark mode").click()
        await page.get_by_role("link", name="Overview").first.click()
        await page.get_by_test_id("stat-total").wait_for(timeout=TIMEOUT_MS)
        await screenshot(page, "overview-dark")

        phone = await open_logged_in(
            browser, e2e_stack, "/devices", viewport={"width": 390, "height": 844}
        )
        await phone.get_by_test_id("device-count").wait_for(timeout=TIMEOUT_MS)
        await phone.get_by_role("button", name="Open navigation").click()
        await phone.get_by_role("link", name="Overview").click()
        await phone.get_by_test_id("stat-total").wait_for(timeout=TIMEOUT_MS)
        await screenshot(phone, "overview-phone")
        assert not page.errors
        assert not phone.errors


async def test_reload_on_a_deep_link(e2e_stack: Stack, browser: Any) -> None:
    page = await open_logged_in(browser, e2e_stack, "/")
    response = await page.goto(e2e_stack.api_url + "/devices")
    assert response is not None
    assert response.status == 200

"""Units in every view and forms that refuse with a reason, in real Chromium against a
running platform. Devices connect in open mode on purpose (the e2e stack's default), as
plain MQTT clients that say what a device built to the protocol would."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.e2e.conftest import open_logged_in, screenshot
from tests.e2e.test_dashboard import TIMEOUT_MS
from tests.support import Stack

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

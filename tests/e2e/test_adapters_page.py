"""A Tasmota (tests/adapter_payloads.py) on the device page in real Chromium: it appears
with its relays and readings, and the page says OTA does not apply to its firmware. Open
mode on purpose: the page is the subject (accounts: tests/integration/test_adapters.py)."""

from __future__ import annotations

from typing import Any

from tests import adapter_payloads as fx
from tests.e2e.conftest import open_logged_in, screenshot
from tests.support import Stack

TIMEOUT_MS = 15_000


async def test_a_tasmota_device_page_says_ota_does_not_apply(
    e2e_stack: Stack, browser: Any
) -> None:
    tasmota = await e2e_stack.device()
    tasmota.publish(*fx.TASMOTA_LWT_ONLINE, retain=True)
    tasmota.publish(*fx.TASMOTA_INFO1)
    tasmota.publish(*fx.TASMOTA_STATE)
    tasmota.publish(*fx.TASMOTA_SENSOR)

    async def registered() -> bool:
        r = await e2e_stack.http.get(f"/api/devices/{fx.TASMOTA_ID}")
        return r.status_code == 200 and "relay:POWER1" in r.json()["capabilities"]

    await e2e_stack.wait_for(registered, timeout=15)
    page = await open_logged_in(browser, e2e_stack, f"/devices/{fx.TASMOTA_ID}")
    note = page.get_by_test_id("ota-not-applicable")
    await note.wait_for(timeout=TIMEOUT_MS)
    assert "tasmota" in (await note.inner_text())
    await page.locator(".ant-tag", has_text="relay:POWER1").wait_for(timeout=TIMEOUT_MS)
    await screenshot(page, "adapters-tasmota-device")
    assert page.errors == []

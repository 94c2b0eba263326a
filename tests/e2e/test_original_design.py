"""A device built to the original design (data and state, no info, never acks) on its
device page in real Chromium: the "capabilities unknown" badge, what it has shown it
has, and the standard commands of the Control tab. Open mode on purpose: the page is the
subject here; docs/devices.md says how such a device joins in the secure default."""

from __future__ import annotations

from typing import Any

import orjson

from tests.e2e.conftest import open_logged_in, screenshot
from tests.integration.test_legacy_devices import LegacyDevice
from tests.support import Stack

TIMEOUT_MS = 15_000
MAC = "A4CF12E2E001"


async def _registered(stack: Stack) -> bool:
    return (await stack.http.get(f"/api/devices/{MAC}")).status_code == 200


async def test_unknown_capabilities_badge_learned_tags_and_standard_commands(
    e2e_stack: Stack, browser: Any
) -> None:
    dev = await LegacyDevice(e2e_stack, MAC).start()
    await e2e_stack.wait_for(lambda: _registered(e2e_stack))
    page = await open_logged_in(browser, e2e_stack, f"/devices/{MAC}")
    badge = page.get_by_test_id("capabilities-unknown")
    await badge.wait_for(timeout=TIMEOUT_MS)
    assert await badge.inner_text() == "capabilities unknown"
    # What it reports is learned while the page is open.
    dev.state({"relays": {"pump": False}})
    await page.locator(".ant-tag", has_text="relay:pump").wait_for(timeout=TIMEOUT_MS)
    await page.locator(".ant-tag", has_text="temperature").wait_for(timeout=TIMEOUT_MS)

    await page.get_by_role("tab", name="Control").click()
    await page.get_by_test_id("generic-commands").wait_for(timeout=TIMEOUT_MS)
    assert await page.get_by_role("switch", name="pump").count() == 1
    await page.get_by_label("Relay name").fill("light")
    await page.get_by_test_id("relay-by-name-on").click()
    # It never acks: the page says what is known, sent, and why no more.
    await page.get_by_text("sent (device does not acknowledge)").wait_for(timeout=TIMEOUT_MS)

    async def relayed() -> bool:
        return any(m["command"] == "relay" for m in dev.received)

    await e2e_stack.wait_for(relayed)
    assert dev.received[-1]["params"] == {"name": "light", "state": "on"}
    await page.get_by_text("Servo (if it has one)").wait_for(timeout=TIMEOUT_MS)
    await screenshot(page, "device-original-design-control")

    # Once it describes itself the badge goes, without a reload.
    assert dev.client is not None
    info = {"firmware": "1.0.0", "capabilities": ["temperature", "relay:light", "reboot"]}
    dev.client.publish(f"devices/{MAC}/info", orjson.dumps(info))
    await badge.wait_for(state="detached", timeout=TIMEOUT_MS)
    assert await page.get_by_test_id("generic-commands").count() == 0
    assert not page.errors

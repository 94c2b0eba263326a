"""Admin pages in real Chromium against a secure-mode platform: a device asks for
provisioning with the fleet secret and an admin approves it in the dashboard; the admin
creates a viewer, who signs in and sees no admin menus."""

from __future__ import annotations

from typing import Any

import orjson

from iotp.services import credentials as cred_service
from tests.e2e.conftest import FLEET_SECRET, navigate, open_logged_in, screenshot
from tests.integration.test_broker_acl import Client, Refused
from tests.support import Stack, eventually

TIMEOUT_MS = 15_000


async def test_admin_approves_a_device_and_creates_a_viewer(
    secure_stack: Stack, browser: Any
) -> None:
    # A new device asks for credentials with the fleet secret: pending.
    device = Client(secure_stack.mqtt_url, "E2EPROV01", "provision", FLEET_SECRET)
    await device.connect()
    secure_stack.cleanup.append(device.close)
    assert await device.subscribe("provision/E2EPROV01/response") in (0, 1)
    device_secret = "e2e-device-made-this-secret-0123456789"
    device.publish("provision/E2EPROV01/request", orjson.dumps({"secret": device_secret}))
    assert orjson.loads((await device.next(10))[1]) == {"status": "pending"}

    page = await open_logged_in(browser, secure_stack)
    await page.get_by_role("link", name="Credentials").click()
    pending = page.get_by_test_id("pending")
    request = pending.locator(".ant-table-row:has-text('E2EPROV01')")
    await request.wait_for(timeout=TIMEOUT_MS)
    # The admin compares the fingerprint with the one the device shows, then approves.
    shown = await request.get_by_test_id("fingerprint").inner_text()
    assert shown == cred_service.fingerprint(device_secret)
    await screenshot(page, "credentials-pending")
    await request.get_by_role("button", name="Approve").click()
    confirm = page.locator(".ant-popover:not(.ant-popover-hidden)")
    assert shown in await confirm.inner_text()
    await confirm.get_by_role("button", name="Approve").click()
    # The device is told at once, and may now connect with its own secret.
    assert orjson.loads((await device.next(10))[1]) == {"status": "approved"}
    approved = page.get_by_test_id("credentials").locator(".ant-table-row:has-text('E2EPROV01')")
    await approved.locator("text=approved").wait_for(timeout=TIMEOUT_MS)
    await request.wait_for(state="detached", timeout=TIMEOUT_MS)
    await device.close()

    # The broker takes new credentials up within IOTP_CREDENTIALS_POLL_SECONDS.
    async def admitted() -> Client:
        return await Client(
            secure_stack.mqtt_url, "E2EPROV01", "E2EPROV01", device_secret
        ).connect()

    own = await eventually(
        admitted, 10, "the broker admits the approved device", retry_on=(Refused,)
    )
    secure_stack.cleanup.append(own.close)

    # A viewer, created in the Users page.
    await page.get_by_role("link", name="Users").click()
    await page.get_by_role("button", name="New user").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Username").fill("vicky")
    await dialog.get_by_label("Password").fill("vicky-password")
    await dialog.get_by_role("button", name="Create").click()
    await page.locator(".ant-table-row:has-text('vicky')").wait_for(timeout=TIMEOUT_MS)
    assert "viewer" in await page.locator(".ant-table-row:has-text('vicky')").inner_text()
    await screenshot(page, "users")
    assert not page.errors

    # The viewer signs in: no Users or Credentials menu, and the page itself refuses.
    viewer = await open_logged_in(
        browser, secure_stack, username="vicky", password="vicky-password"
    )
    nav = viewer.get_by_role("menu")
    await nav.get_by_role("link", name="Devices").wait_for(timeout=TIMEOUT_MS)
    assert await nav.get_by_role("link", name="Users").count() == 0
    assert await nav.get_by_role("link", name="Credentials").count() == 0
    assert "vicky (viewer)" in await viewer.get_by_test_id("user").inner_text()
    await navigate(viewer, "/users")
    await viewer.get_by_text("Admins only").wait_for(timeout=TIMEOUT_MS)
    await screenshot(viewer, "users-as-viewer")
    assert not viewer.errors

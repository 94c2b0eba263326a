"""A screenshot of every page, with data on it, for review: written to
test-artifacts/pages/ (not committed). A platform with simulated ESP32s (the firmware's
own logic) connecting in open mode on purpose, a rule that raised an alert, a webhook,
a firmware bundle and a second user; each page is checked to show that data before
its picture is taken."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.control_support import small_bundle
from tests.e2e.conftest import ARTIFACTS, navigate, open_logged_in
from tests.e2e.test_dashboard import TIMEOUT_MS, fleet
from tests.e2e.test_truth import _gas_alert_rule
from tests.support import Stack

PAGES = ARTIFACTS / "pages"


async def _shot(page: Any, name: str) -> Path:
    PAGES.mkdir(parents=True, exist_ok=True)
    path = PAGES / f"{name}.png"
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=str(path), full_page=True)
    return path


async def _seed(stack: Stack) -> None:
    await _gas_alert_rule(stack)
    gas = await stack.device("E2EGASSHOT01")
    gas.publish("devices/E2EGASSHOT01/data", json.dumps({"gas": 720}))
    r = await stack.http.post(
        "/api/webhooks",
        json={"name": "ops", "url": "https://example.com/hooks/iotp", "events": ["alert"]},
    )
    assert r.status_code == 201, r.text
    r = await stack.http.post(
        "/api/firmware",
        params={"version": "2.0.0", "notes": "faster sensors"},
        content=small_bundle("2.0.0"),
        headers={"content-type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    r = await stack.http.post(
        "/api/users", json={"username": "viewer1", "password": "viewer-pass-123", "role": "viewer"}
    )
    assert r.status_code == 201, r.text

    async def alerted() -> bool:
        return bool((await stack.get("/api/alerts"))["count"])

    await stack.wait_for(alerted)


async def test_every_page_has_a_screenshot_with_data(e2e_stack: Stack, browser: Any) -> None:
    async with fleet(e2e_stack, devices=3) as sim:
        await _seed(e2e_stack)
        node = sim.devices[0].node_id
        relay = next(iter(sim.devices[0].hal.relays))
        r = await e2e_stack.http.post(
            f"/api/devices/{node}/commands?wait=true",
            json={"command": "relay", "params": {"name": relay, "state": "on"}},
        )
        assert r.json()["status"] == "acked", r.text
        page = await open_logged_in(browser, e2e_stack, "/")
        shots: list[Path] = []

        await (
            page.get_by_test_id("alerts-tile")
            .get_by_text("1 critical")
            .wait_for(timeout=TIMEOUT_MS)
        )
        shots.append(await _shot(page, "overview"))

        # Each page and what must be on it before the picture.
        pages = [
            ("devices", "/devices", page.locator(".ant-table-row", has_text=node)),
            ("firmware", "/firmware", page.locator(".ant-table-row", has_text="2.0.0")),
            ("automations", "/automations", page.locator(".ant-table-row", has_text="Gas alarm")),
            ("alerts", "/alerts", page.locator(".ant-table-row", has_text="Gas 720")),
            ("webhooks", "/webhooks", page.locator(".ant-table-row", has_text="ops")),
            ("users", "/users", page.locator(".ant-table-row", has_text="viewer1")),
            ("credentials", "/credentials", page.get_by_text("Device credentials").first),
            ("not-found", "/no/such/page", page.get_by_test_id("not-found")),
        ]
        for name, path, ready in pages:
            await navigate(page, path)
            await ready.first.wait_for(timeout=TIMEOUT_MS)
            shots.append(await _shot(page, name))

        await navigate(page, f"/devices/{node}")
        tabs = [
            ("live", page.get_by_test_id("live-chart-temperature")),
            ("history", page.get_by_test_id("history-chart")),
            ("control", page.get_by_test_id("control-panel")),
            ("commands", page.get_by_test_id("command-history").get_by_text("acked")),
            ("events", page.get_by_test_id("event")),
        ]
        for tab, ready in tabs:
            await page.get_by_role("tab", name=tab.capitalize()).click()
            await ready.first.wait_for(timeout=TIMEOUT_MS)
            shots.append(await _shot(page, f"device-{tab}"))

        await page.get_by_role("button", name="Log out").click()
        await page.wait_for_url("**/login**")
        shots.append(await _shot(page, "login"))
        assert all(p.stat().st_size > 10_000 for p in shots), shots
        assert not page.errors, page.errors

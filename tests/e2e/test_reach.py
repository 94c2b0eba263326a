"""The dashboard for everyone, in real Chromium: every page passes axe-core (no serious or
critical violation) in light and dark mode, no page is wider than the window at 390 px
(a phone) or 1440 px, a link reproduces the view, and a gas-safety and a fan-on-temperature
rule are built and dry-run from form fields alone.

One platform and one browser for the module; every page is visited once per theme and
size. Devices here publish on the open broker of the test stack (open mode on purpose:
the pages, not provisioning, are under test)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.control_support import small_bundle
from tests.e2e.conftest import CHROMIUM, ROOT, chromium, open_logged_in, screenshot
from tests.support import OPEN, Stack, eventually, need, run_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
AXE_SOURCE = AXE.read_text() + "\n;true" if AXE.is_file() else ""
TIMEOUT_MS = 15_000
SENSOR = "E2EKITCHEN01"  # gas and temperature
FAN = "E2EHALLFAN01"  # relays fan and light, a servo
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
# Animations off: axe must judge the colours a page settles on, not a fade's midpoint.
STILL = "*, *::before, *::after { transition: none !important; animation: none !important; }"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    need(os.path.exists(CHROMIUM), f"{CHROMIUM} (apt-get install chromium)")
    need((ROOT / "web" / "dist" / "index.html").is_file(), "web/dist (make web)")
    need(AXE.is_file(), "web/node_modules/axe-core (cd web && npm ci)")
    async with run_stack("embedded-sqlite", tmp_path_factory.mktemp("reach"), mode=OPEN) as s:
        await _seed(s)
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


async def _seed(stack: Stack) -> None:
    """Two devices with names, capabilities (many, to wrap), an hour of readings with a
    gas spike and a warm spell, a rule, an alert, a webhook: every page has content."""
    client = await stack.device()
    caps = {
        SENSOR: ["gas", "temperature", "humidity", "pressure", "light_level", "ota", "reboot"],
        FAN: ["temperature", "relay:fan", "relay:light", "servo", "ota", "reboot", "automation"],
    }
    for node, capabilities in caps.items():
        info = {"type": "esp32-e2e", "firmware": "1.2.3", "capabilities": capabilities}
        client.publish(f"devices/{node}/info", json.dumps(info), retain=True)
        client.publish(f"devices/{node}/status", "online", retain=True)
    now = time.time()
    for i in range(60):  # one reading a minute for the last hour
        ts = now - 3600 + i * 60
        gas = 650 if 20 <= i < 25 else 120
        temperature = 30.0 if 40 <= i < 50 else 22.0
        client.publish(
            f"devices/{SENSOR}/data",
            json.dumps({"ts": ts, "gas": gas, "temperature": temperature, "humidity": 50}),
        )
        client.publish(f"devices/{FAN}/data", json.dumps({"ts": ts, "temperature": temperature}))

    async def registered() -> bool:
        devices = (await stack.get("/api/devices"))["data"]
        return {d["id"] for d in devices if d["capabilities"]} >= set(caps)

    await stack.wait_for(registered, timeout=20)
    for node, name in ((SENSOR, "Kitchen sensor"), (FAN, "Hall fan")):
        r = await stack.http.patch(f"/api/devices/{node}", json={"name": name, "tags": ["home"]})
        assert r.status_code == 200, r.text
    rule = {
        "name": "Too warm",
        "scope": {"devices": [SENSOR]},
        "trigger": {"type": "threshold", "metric": "temperature", "value": 28},
        "actions": [{"type": "alert", "severity": "warning"}],
    }
    assert (await stack.http.post("/api/rules", json=rule)).status_code == 201
    hook = {"name": "Home server", "url": "https://example.org/iotp", "events": ["alert"]}
    assert (await stack.http.post("/api/webhooks", json=hook)).status_code == 201


def pages() -> list[str]:
    return [
        "/",
        "/devices",
        f"/devices/{SENSOR}",
        f"/devices/{FAN}?tab=control",
        f"/devices/{SENSOR}?tab=history&range=24h",
        f"/devices/{SENSOR}?tab=commands",
        f"/devices/{SENSOR}?tab=events",
        "/firmware",
        "/automations",
        "/alerts",
        "/webhooks",
        "/users",
        "/credentials",
    ]


async def _settle(page: Any) -> None:
    """Wait until the page has drawn its data (no spinner or skeleton left)."""
    await page.wait_for_load_state("networkidle")
    await page.wait_for_function(
        "() => document.querySelector('h2') && !document.querySelector("
        "'.ant-spin-spinning, .ant-skeleton, .ant-table-placeholder .ant-spin')",
        timeout=TIMEOUT_MS,
    )


async def _open(page: Any, stack: Stack, path: str) -> None:
    await page.goto(stack.api_url + path)
    await page.add_style_tag(content=STILL)
    await _settle(page)


async def _axe(page: Any) -> list[str]:
    """axe-core's serious and critical violations, one line each."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol: the page's CSP refuses inline scripts.
        await page.evaluate(AXE_SOURCE)
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 3)"
        ".map(n => n.target.join(' ')).join(', ')}`)"
    )
    return list(result)


async def _overflow(page: Any) -> int:
    """How many pixels the page is wider than the window (0: no sideways scrolling)."""
    return int(
        await page.evaluate(
            "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
            " - window.innerWidth"
        )
    )


async def _set_theme(page: Any, theme: str) -> None:
    switch = page.get_by_role("switch", name="Dark mode")
    if (await switch.get_attribute("aria-checked") == "true") != (theme == "dark"):
        await switch.click()
    await page.wait_for_function(
        "t => document.documentElement.dataset.theme === t", arg=theme, timeout=TIMEOUT_MS
    )


async def test_every_page_accessible_in_both_themes_and_fits_phone_and_desktop(
    stack: Stack, browser: Any
) -> None:
    login = await browser.new_page(viewport=PHONE)
    await login.goto(stack.api_url + "/login")
    await login.get_by_label("Username").wait_for(timeout=TIMEOUT_MS)
    problems = {f"/login light: {v}" for v in await _axe(login)}
    if await _overflow(login) > 0:
        problems.add("/login is wider than 390 px")
    await login.close()

    page = await open_logged_in(browser, stack, viewport=DESKTOP)
    for theme in ("light", "dark"):
        await _set_theme(page, theme)
        for path in pages():
            await _open(page, stack, path)
            problems |= {f"{path} {theme}: {v}" for v in await _axe(page)}
            if theme == "light" and (extra := await _overflow(page)) > 0:
                problems.add(f"{path} is {extra} px wider than 1440 px")
    await screenshot(page, "reach-devices-dark-1440")

    await page.set_viewport_size(PHONE)
    for path in pages():
        await _open(page, stack, path)
        if (extra := await _overflow(page)) > 0:
            await screenshot(page, "reach-overflow-" + path.strip("/").replace("/", "-"))
            problems.add(f"{path} is {extra} px wider than 390 px")
    await screenshot(page, "reach-credentials-dark-390")
    assert not page.errors
    assert not sorted(problems), "\n".join(sorted(problems))


async def test_devices_table_fits_its_card_at_1440(stack: Stack, browser: Any) -> None:
    page = await open_logged_in(browser, stack, "/devices", viewport=DESKTOP)
    table = page.get_by_test_id("devices-table")
    await table.locator(f"[data-device='{SENSOR}']").wait_for(timeout=TIMEOUT_MS)
    # Every column, the delete button included, is inside the table's box.
    box = await table.bounding_box()
    delete = page.get_by_role("button", name="Delete Kitchen sensor")
    button = await delete.bounding_box()
    assert button is not None
    assert box is not None
    assert button["x"] + button["width"] <= box["x"] + box["width"] + 0.5
    header = await table.get_by_role("columnheader", name="Actions").bounding_box()
    assert header is not None
    assert header["x"] + header["width"] <= box["x"] + box["width"] + 0.5
    await page.close()


async def test_a_link_reproduces_the_view(stack: Stack, browser: Any) -> None:
    page = await open_logged_in(browser, stack, "/devices", viewport=DESKTOP)
    await page.get_by_label("Search devices").fill("kitchen")
    await page.get_by_role("columnheader", name="Name").click()  # sort by name
    await page.wait_for_url("**q=kitchen**")
    link = page.url
    assert "sort=name" in link, link
    await page.goto(stack.api_url + f"/devices/{SENSOR}")
    await page.get_by_role("tab", name="History").click()
    await page.get_by_test_id("range").get_by_text("24h").click()
    await page.wait_for_url("**range=24h**")
    device_link = page.url
    assert "tab=history" in device_link, device_link

    other = await open_logged_in(browser, stack, viewport=DESKTOP)
    await other.goto(link)
    await other.get_by_label("Search devices").wait_for(timeout=TIMEOUT_MS)
    assert await other.get_by_label("Search devices").input_value() == "kitchen"
    await other.locator(f"[data-device='{SENSOR}']").wait_for(timeout=TIMEOUT_MS)
    assert await other.locator(f"[data-device='{FAN}']").count() == 0
    await other.goto(device_link)
    await other.get_by_role("tab", name="History", selected=True).wait_for(timeout=TIMEOUT_MS)
    await (
        other.get_by_test_id("range")
        .locator(".ant-segmented-item-selected", has_text="24h")
        .wait_for(timeout=TIMEOUT_MS)
    )
    await page.close()
    await other.close()


async def test_links_reproduce_rules_users_firmware_and_webhooks_views(
    stack: Stack, browser: Any
) -> None:
    """Sort, tab, the open rollout and the open delivery log are in the URL: they survive
    a reload, come back with the back button, and a link opens them elsewhere."""
    fw = await stack.http.post(
        "/api/firmware",
        params={"version": "9.9.9"},
        content=small_bundle("9.9.9"),
        headers={"content-type": "application/octet-stream"},
    )
    assert fw.status_code == 201, fw.text
    r = await stack.http.post(
        "/api/rollouts", json={"firmware_id": fw.json()["id"], "selector": {"devices": [SENSOR]}}
    )
    assert r.status_code == 201, r.text
    rollout_id = r.json()["id"]
    (hook,) = (await stack.get("/api/webhooks"))["data"]
    page = await open_logged_in(browser, stack, "/automations", viewport=DESKTOP)

    fired = page.get_by_role("columnheader", name="Fired", exact=True)
    await fired.click()
    await page.wait_for_url("**sort=fired**")
    await fired.click()
    await page.wait_for_url("**sort=-fired**")
    rules_link = page.url
    await page.reload()
    await expect(page.get_by_role("columnheader", name="Fired", exact=True)).to_have_attribute(
        "aria-sort", "descending", timeout=TIMEOUT_MS
    )

    await page.goto(stack.api_url + "/users")
    await page.get_by_role("tab", name="API keys").click()
    await page.wait_for_url("**tab=keys**")
    await page.goto(stack.api_url + "/webhooks")
    await page.get_by_role("button", name="Deliveries").click()
    await page.wait_for_url(f"**log={hook['id']}**")
    await page.get_by_text(f"Deliveries: {hook['name']}").wait_for(timeout=TIMEOUT_MS)
    webhooks_link = page.url
    await page.go_back()  # to the users page, on the tab it was left on
    await page.wait_for_url("**/users?tab=keys")
    await expect(page.get_by_role("tab", name="API keys")).to_have_attribute(
        "aria-selected", "true", timeout=TIMEOUT_MS
    )
    await page.go_forward()
    await page.get_by_text(f"Deliveries: {hook['name']}").wait_for(timeout=TIMEOUT_MS)
    await page.keyboard.press("Escape")  # closing the log takes it out of the URL
    await page.wait_for_url(stack.api_url + "/webhooks")

    await page.goto(stack.api_url + "/firmware")
    rollouts = page.locator(".ant-card", has_text="Rollouts")
    await rollouts.get_by_role("button", name="Expand row").click()
    await page.wait_for_url(f"**rollouts={rollout_id}**")
    firmware_link = page.url

    other = await open_logged_in(browser, stack, viewport=DESKTOP)
    for link in (rules_link, webhooks_link, firmware_link):
        await other.goto(link)
        await _settle(other)
    await other.goto(firmware_link)
    await other.locator(".ant-table-expanded-row", has_text=SENSOR).wait_for(timeout=TIMEOUT_MS)
    await other.goto(webhooks_link)
    await other.get_by_text(f"Deliveries: {hook['name']}").wait_for(timeout=TIMEOUT_MS)
    await other.goto(rules_link)
    await expect(other.get_by_role("columnheader", name="Fired", exact=True)).to_have_attribute(
        "aria-sort", "descending", timeout=TIMEOUT_MS
    )
    await page.close()
    await other.close()


async def _pick(page: Any, label: str, option: str) -> None:
    """Choose `option` in the Select or AutoComplete labelled `label`."""
    await page.get_by_label(label, exact=True).click()
    await page.locator(".ant-select-dropdown:visible").get_by_title(option, exact=True).click()


async def _true(value: bool) -> bool:
    return value


async def _dry_run(page: Any) -> str:
    await page.get_by_role("button", name="Dry run").click()
    result = page.get_by_test_id("dry-run")
    try:
        await result.wait_for(timeout=2 * TIMEOUT_MS)
    except Exception:
        await screenshot(page, "reach-dry-run-missing")
        raise
    return str(await result.inner_text())


async def test_gas_safety_and_fan_rules_built_without_json(stack: Stack, browser: Any) -> None:
    page = await open_logged_in(browser, stack, "/automations", viewport=PHONE)
    await page.get_by_role("button", name="New rule").click()
    dialog = page.get_by_role("dialog")

    # Gas safety: gas above 400 (re-arms below 300), a critical alert, the hall fan on,
    # and off again when it clears.
    await dialog.get_by_label("Name").fill("Kitchen gas safety")
    await _pick(page, "Devices (empty: all)", f"Kitchen sensor ({SENSOR})")
    await page.keyboard.press("Escape")
    await _pick(page, "Metric", "gas")
    await dialog.get_by_label("Threshold").fill("400")
    await dialog.get_by_label("Hysteresis").fill("100")
    await _pick(page, "Severity of action 1", "critical")
    await dialog.get_by_role("button", name="Add action").click()
    await _pick(page, "Kind of action 2", "Command (relay, servo)")
    await _pick(page, "Device of action 2", f"Hall fan ({FAN})")
    await _pick(page, "Relay of action 2", "fan")
    await dialog.get_by_role("button", name="Add action").click()
    await _pick(page, "Kind of action 3", "Command (relay, servo)")
    await _pick(page, "When, action 3", "when it clears")
    await _pick(page, "Device of action 3", f"Hall fan ({FAN})")
    await _pick(page, "Relay of action 3", "fan")
    await _pick(page, "Relay state of action 3", "off")
    assert await dialog.locator("textarea").count() == 0  # no JSON anywhere
    dry = await _dry_run(page)
    assert "fired 1 times" in dry, dry
    assert "cleared 1 times" in dry, dry
    assert "Kitchen sensor" in dry
    assert await _overflow(page) <= 0
    await screenshot(page, "reach-gas-rule-390")
    await dialog.get_by_role("button", name="Save").click()
    await page.locator(".ant-table-row", has_text="Kitchen gas safety").wait_for(timeout=TIMEOUT_MS)

    gas = next(
        r for r in (await stack.get("/api/rules"))["data"] if r["name"].startswith("Kitchen")
    )
    assert gas["trigger"] == {
        "type": "threshold",
        "metric": "gas",
        "op": "above",
        "value": 400,
        "hysteresis": 100,
        "for_seconds": 0,
    }
    assert gas["scope"]["devices"] == [SENSOR]
    commands = [
        (a["when"], a["device_id"], a["params"]) for a in gas["actions"] if a["type"] == "command"
    ]
    assert commands == [
        ("fire", FAN, {"name": "fan", "state": "on"}),
        ("clear", FAN, {"name": "fan", "state": "off"}),
    ]
    assert [a["severity"] for a in gas["actions"] if a["type"] == "alert"] == ["critical"]

    # The rule fires on a live reading: the table's count moves without a reload. The
    # worker picks up saved rules on its next reload (within a second): readings sent
    # before that are not judged by the rule.
    engine = stack.worker.automations.engine
    await stack.wait_for(lambda: _true(gas["id"] in engine.rules))
    client = await stack.device()
    for value in (120, 700):
        client.publish(f"devices/{SENSOR}/data", json.dumps({"gas": value}))
    await (
        page.get_by_test_id(f"fired-{gas['id']}")
        .get_by_text("1", exact=True)
        .wait_for(timeout=TIMEOUT_MS)
    )

    # Fan on temperature, on the fan's own relay: above 28 °C, off below 26 °C.
    await page.get_by_role("button", name="New rule").click()
    await dialog.get_by_label("Name").fill("Hall fan on temperature")
    await _pick(page, "Devices (empty: all)", f"Hall fan ({FAN})")
    await page.keyboard.press("Escape")
    await _pick(page, "Metric", "temperature")
    await dialog.get_by_label("Threshold").fill("28")
    await dialog.get_by_label("Hysteresis").fill("2")
    await _pick(page, "Kind of action 1", "Command (relay, servo)")
    await _pick(page, "Relay of action 1", "fan")
    await dialog.get_by_role("button", name="Add action").click()
    await _pick(page, "Kind of action 2", "Command (relay, servo)")
    await _pick(page, "When, action 2", "when it clears")
    await _pick(page, "Relay of action 2", "fan")
    await _pick(page, "Relay state of action 2", "off")
    # The relay pick list offers the fan device's relays only. Read once the state list
    # has closed, so that only this select's options are on screen.
    await expect(page.locator(".ant-select-dropdown:visible")).to_have_count(0)
    await page.get_by_label("Relay of action 2", exact=True).click()
    options = page.locator(".ant-select-dropdown:visible .ant-select-item-option")
    await options.first.wait_for(timeout=TIMEOUT_MS)

    async def fan_relays_offered() -> list[str] | None:
        # The list may re-render while it opens: read it until it has settled on the two.
        offered = sorted(await options.all_inner_texts())
        return offered if offered == ["fan", "light"] else None

    await eventually(fan_relays_offered, TIMEOUT_MS / 1000, "the fan device's relays offered")
    await page.keyboard.press("Escape")
    assert await dialog.locator("textarea").count() == 0
    dry = await _dry_run(page)
    assert "fired 1 times" in dry, dry
    assert "cleared 1 times" in dry, dry
    await dialog.get_by_role("button", name="Save").click()
    await page.locator(".ant-table-row", has_text="Hall fan on temperature").wait_for(
        timeout=TIMEOUT_MS
    )
    fan = next(r for r in (await stack.get("/api/rules"))["data"] if r["name"].startswith("Hall"))
    assert (fan["trigger"]["metric"], fan["trigger"]["hysteresis"]) == ("temperature", 2)
    assert [(a["when"], a.get("device_id"), a["params"]) for a in fan["actions"]] == [
        ("fire", None, {"name": "fan", "state": "on"}),
        ("clear", None, {"name": "fan", "state": "off"}),
    ]
    assert not page.errors
    await page.close()

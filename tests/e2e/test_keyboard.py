"""The dashboard's main tasks by keyboard alone, in real Chromium: sign in, move between
pages, search the devices, open one, switch its tabs, turn a relay with Space, open and
close a dialog with Enter and Escape; every control reached shows where the focus is.
The device publishes on the open broker of the test stack (open mode on purpose: the
keyboard, not provisioning, is under test)."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.e2e.conftest import screenshot
from tests.support import TEST_ADMIN_PASSWORD, Stack

TIMEOUT_MS = 15_000
DEVICE = "E2EKEYBOARD1"
MAX_TABS = 60

# What the focused element is (its name as a user hears it) and whether anyone can see
# that it has the focus: an outline, or a focus ring (box-shadow) on it or on the
# Ant Design control that wraps it (inputs, selects and switches draw theirs there).
# The name of an element as a user hears it.
NAME_OF = """(el) => {
  const by = el.getAttribute('aria-labelledby');
  const labelled = by ? by.split(' ').map(id => document.getElementById(id))
    .filter(Boolean).map(e => e.innerText).join(' ') : '';
  const label = labelled || (el.labels && el.labels[0] ? el.labels[0].innerText : '');
  return (el.getAttribute('aria-label') || label || el.innerText || el.placeholder
          || el.getAttribute('title') || '').trim().slice(0, 80);
}"""

FOCUS = (
    """() => {
  const nameOf = """
    + NAME_OF
    + """;
  const el = document.activeElement;
  if (!el || el === document.body) return {name: '', visible: false, tag: ''};
  const host = el.closest('.ant-input-affix-wrapper, .ant-input-outlined, .ant-select, '
                          + '.ant-input-number, .ant-switch, .ant-btn') || el;
  const shows = (e) => {
    const s = getComputedStyle(e);
    return (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0)
        || (s.boxShadow && s.boxShadow !== 'none');
  };
  return {name: nameOf(el), visible: shows(el) || shows(host), tag: el.tagName.toLowerCase()};
}"""
)

# Whether a control of that name is on the page yet (pages are loaded on first visit).
RENDERED = (
    """(pattern) => {
  const nameOf = """
    + NAME_OF
    + """;
  const re = new RegExp(pattern, 'i');
  const controls = document.querySelectorAll(
    'a[href], button, input, select, textarea, [tabindex]');
  return Array.from(controls).some(el => re.test(nameOf(el)));
}"""
)


async def _focus(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(FOCUS)
    return result


async def tab_to(page: Any, name: str, *, back: bool = False) -> dict[str, Any]:
    """Press Tab (or Shift+Tab) until the focus is on the control named ``name``; every
    control passed on the way must show its focus."""
    pattern = re.compile(name, re.IGNORECASE)
    # Tabbing before the control exists would pass over a page still loading.
    await page.wait_for_function(RENDERED, arg=name, timeout=TIMEOUT_MS)
    seen: list[str] = []
    for _ in range(MAX_TABS):
        await page.keyboard.press("Shift+Tab" if back else "Tab")
        focus = await _focus(page)
        seen.append(focus["name"])
        if focus["tag"] and not focus["visible"]:
            await screenshot(page, "keyboard-invisible-focus")
            raise AssertionError(f"focus is not visible on {focus}")
        if pattern.search(focus["name"]):
            return focus
    raise AssertionError(f"{name!r} not reached by Tab; went through {seen}")


async def test_main_tasks_by_keyboard_only(e2e_stack: Stack, browser: Any) -> None:
    stack = e2e_stack
    client = await stack.device()
    info = {"firmware": "1.0.0", "capabilities": ["temperature", "relay:lamp", "reboot"]}
    client.publish(f"devices/{DEVICE}/info", json.dumps(info))
    client.publish(f"devices/{DEVICE}/state", b'{"relays": {"lamp": false}}', retain=True)

    async def registered() -> bool:
        r = await stack.http.get(f"/api/devices/{DEVICE}")
        return r.status_code == 200 and bool(r.json()["capabilities"])

    await stack.wait_for(registered)
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Sign in.
    await page.goto(stack.api_url + "/")
    await page.wait_for_url("**/login**")
    await tab_to(page, "^username$")
    await page.keyboard.type("admin")
    await tab_to(page, "^password$")
    await page.keyboard.type(TEST_ADMIN_PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(stack.api_url + "/")

    # The sidebar's Devices link, then the search field and the device's link.
    await tab_to(page, "^devices$")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/devices")
    await tab_to(page, "search devices")
    await page.keyboard.type("keyboard")
    await _search_has(page, "q=keyboard")
    await tab_to(page, f"ESP32-{DEVICE[-6:]}")
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"**/devices/{DEVICE}")

    # Its tabs: arrow keys move between them, Enter opens one.
    await tab_to(page, "live$")
    for _ in range(2):
        await page.keyboard.press("ArrowRight")
    assert (await _focus(page))["name"].lower().endswith("control")
    await page.keyboard.press("Enter")
    await _search_has(page, "tab=control")
    lamp = await tab_to(page, "^lamp$")
    assert lamp["tag"] == "button"
    await page.keyboard.press("Space")
    relay = await stack.wait_for(lambda: _command(stack, "relay"))
    assert relay["params"] == {"name": "lamp", "state": "on"}

    # A confirmation opens with Enter and closes with Escape, the focus back on its button.
    await tab_to(page, "^reboot$")
    await page.keyboard.press("Enter")
    confirm = page.locator(".ant-popconfirm:visible")
    await confirm.wait_for(timeout=TIMEOUT_MS)
    await page.keyboard.press("Escape")
    await confirm.wait_for(state="hidden", timeout=TIMEOUT_MS)
    assert (await _focus(page))["name"].lower() == "reboot"
    assert await _command(stack, "reboot") is None

    # A dialog: New rule opens the builder with Enter, Escape closes it.
    await page.goto(stack.api_url + "/automations")
    await page.get_by_role("heading", name="Automations").wait_for(timeout=TIMEOUT_MS)
    await tab_to(page, "new rule")
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    await dialog.wait_for(timeout=TIMEOUT_MS)
    await page.keyboard.press("Escape")
    await dialog.wait_for(state="hidden", timeout=TIMEOUT_MS)
    assert (await _focus(page))["name"].lower() == "new rule"
    assert not errors


async def _search_has(page: Any, part: str) -> None:
    """The query string holds ``part`` (page state replaces the history entry: no load)."""
    await page.wait_for_function("p => location.search.includes(p)", arg=part, timeout=TIMEOUT_MS)


async def _command(stack: Stack, name: str) -> dict[str, Any] | None:
    page = await stack.get(f"/api/devices/{DEVICE}/commands")
    return next((c for c in page["data"] if c["command"] == name), None)

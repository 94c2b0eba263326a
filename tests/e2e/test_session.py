"""The dashboard's session as a script on the page would see it, in real Chromium against
a running platform (no devices): no token in web storage or readable cookies, the refresh
token in an httpOnly cookie that survives a reload, and a logout that revokes it on the
server, so a copy of the cookie taken before is worthless after."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.conftest import open_logged_in
from tests.e2e.test_dashboard import TIMEOUT_MS
from tests.support import Stack

STORAGE = """() => {
  const all = {};
  for (const store of [localStorage, sessionStorage])
    for (let i = 0; i < store.length; i++) all[store.key(i)] = store.getItem(store.key(i));
  return all;
}"""


async def test_page_scripts_cannot_read_the_tokens_and_logout_revokes(
    e2e_stack: Stack, browser: Any
) -> None:
    page = await open_logged_in(browser, e2e_stack, "/")
    user = page.get_by_test_id("user")
    await user.get_by_text("admin (admin)").wait_for(timeout=TIMEOUT_MS)
    cookies = {c["name"]: c for c in await page.context.cookies()}
    refresh = cookies["iotp_refresh"]
    assert refresh["httpOnly"]
    assert refresh["sameSite"] == "Strict"
    assert refresh["path"] == "/api/auth"
    # What a script injected into the page could read: web storage and document.cookie.
    stored = await page.evaluate(STORAGE)
    readable = await page.evaluate("() => document.cookie")
    for value in [*stored.values(), readable]:
        assert refresh["value"] not in (value or "")
        assert "eyJ" not in (value or ""), value  # no JWT (the access token) either
    # A reload signs in again from the cookie alone.
    await page.reload()
    await user.get_by_text("admin (admin)").wait_for(timeout=TIMEOUT_MS)
    cookies = {c["name"]: c for c in await page.context.cookies()}
    copied = {name: cookies[name]["value"] for name in ("iotp_refresh", "iotp_csrf")}
    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url("**/login**")
    # The attacker's copy of the cookies, taken before the logout, is refused after it.
    async with httpx.AsyncClient(base_url=e2e_stack.api_url, cookies=copied) as thief:
        r = await thief.post("/api/auth/refresh", headers={"X-CSRF-Token": copied["iotp_csrf"]})
    assert r.status_code == 401, r.text
    assert not page.errors, page.errors

"""Browser end-to-end tests: Debian's chromium driven by Playwright against a real
platform stack (embedded broker, worker, API serving web/dist) in this process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import OPEN, PROVISIONED, TEST_ADMIN_PASSWORD, Stack, need, run_stack

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]

pytestmark = pytest.mark.e2e


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
async def e2e_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    need(os.path.exists(CHROMIUM), f"{CHROMIUM} (apt-get install chromium)")
    need((ROOT / "web" / "dist" / "index.html").is_file(), "web/dist (make web)")
    async with run_stack("embedded-sqlite", tmp_path, mode=OPEN, offline_min_seconds=1.0) as stack:
        yield stack


FLEET_SECRET = "fleet-provisioning-secret-for-e2e"


@pytest.fixture
async def secure_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """As `iotp serve --secure`: the embedded broker with its credential and topic ACL
    plugins, the worker and the provisioner on the service account, the API serving
    web/dist."""
    need(os.path.exists(CHROMIUM), f"{CHROMIUM} (apt-get install chromium)")
    need((ROOT / "web" / "dist" / "index.html").is_file(), "web/dist (make web)")
    async with run_stack(
        "embedded-sqlite",
        tmp_path,
        mode=PROVISIONED,
        secret_key="e2e-secret-key-" + "s" * 40,
        provisioning_secret=FLEET_SECRET,
        credentials_poll_seconds=0.2,
    ) as stack:
        yield stack


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Debian's chromium driven by Playwright (never a downloaded browser)."""
    need(os.path.exists(CHROMIUM), f"{CHROMIUM} (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


async def open_logged_in(
    browser: Any,
    stack: Stack,
    path: str = "/",
    *,
    username: str = "admin",
    password: str = TEST_ADMIN_PASSWORD,
    viewport: dict[str, int] | None = None,
) -> Any:
    page = await browser.new_page(viewport=viewport or {"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    # Start at / (the server has no SPA fallback for deep links yet): the app sends an
    # unauthenticated visitor to its /login route by itself.
    await page.goto(stack.api_url + "/")
    await page.wait_for_url("**/login**")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(stack.api_url + "/")
    if path != "/":
        await navigate(page, path)
    return page


async def navigate(page: Any, path: str) -> None:
    """Client-side navigation, as a click on a link would do."""
    await page.evaluate(
        "p => { history.pushState({}, '', p); dispatchEvent(new PopStateEvent('popstate')); }",
        path,
    )


async def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def pick(page: Any, select: Any, option: str) -> None:
    """Open the Select `select` and choose `option` in its dropdown.

    The dropdown is first drawn off-screen and moved beside its field on the next
    frame, and it slides open: wait until the option is on screen, then click it as a
    user would (not forced, so a click that would miss fails here instead).
    """
    from playwright.async_api import expect

    await select.click()
    choice = page.locator(".ant-select-dropdown:visible").get_by_title(option, exact=True)
    await expect(choice).to_be_in_viewport(timeout=15_000)
    await choice.click()

"""The device page's CSV button, in real Chromium against a running platform: the file
it saves is what the API answers for the range on screen, and a refused export saves
nothing and says why. Devices are plain MQTT clients in open mode on purpose (the e2e
stack's default)."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import open_logged_in, screenshot
from tests.e2e.test_dashboard import TIMEOUT_MS
from tests.support import Stack


async def _stored(stack: Stack, device_id: str, count: int) -> None:
    async def probe() -> bool:
        r = await stack.http.get(f"/api/devices/{device_id}/telemetry", params={"bucket": ""})
        series = r.json()["series"] if r.status_code == 200 else {}
        return sum(len(points) for points in series.values()) >= count

    await stack.wait_for(probe, timeout=15)


def _is_csv(response: Any) -> bool:
    return "/telemetry?" in response.url and "format=csv" in response.url


async def test_the_csv_button_saves_what_the_api_answers(e2e_stack: Stack, browser: Any) -> None:
    device_id = "E2ECSV000001"
    device = await e2e_stack.device(device_id)
    now = time.time()
    for k in range(3):  # three readings a minute apart, inside the default hour
        reading = {"temperature": 21.5 + k, "humidity": 40 + k, "ts": now - 180 + 60 * k}
        device.publish(f"devices/{device_id}/data", json.dumps(reading))
    await _stored(e2e_stack, device_id, 6)
    page = await open_logged_in(browser, e2e_stack, f"/devices/{device_id}")
    await page.get_by_role("tab", name="History").click()
    await page.get_by_test_id("history-chart").wait_for(timeout=TIMEOUT_MS)
    async with (
        page.expect_response(_is_csv, timeout=TIMEOUT_MS) as answered,
        page.expect_download(timeout=TIMEOUT_MS) as downloaded,
    ):
        await page.get_by_test_id("csv").click()
    response = await answered.value
    download = await downloaded.value
    assert response.status == 200
    assert download.suggested_filename == f"{device_id}.csv"
    saved = Path(await download.path()).read_bytes()
    # The same request (range and all) asked of the API directly, with the admin's token.
    direct = await e2e_stack.http.get(response.url)
    assert direct.status_code == 200, direct.text
    assert direct.headers["content-type"].startswith("text/csv")
    assert saved == direct.content
    rows = list(csv.DictReader(io.StringIO(saved.decode())))
    assert {r["metric"] for r in rows} == {"temperature", "humidity"}, rows
    assert len(rows) == 6, rows
    assert all(r["device_id"] == device_id for r in rows)
    await screenshot(page, "device-history-csv")
    assert not page.errors, page.errors


async def test_a_refused_export_saves_nothing_and_says_why(e2e_stack: Stack, browser: Any) -> None:
    """A device with more metrics than one request may ask for (the query budget): the
    API refuses the export with a 422, and the page shows that reason instead of saving
    it as the file."""
    device_id = "E2ECSV000002"
    device = await e2e_stack.device(device_id)
    names = [f"m{i:02d}" for i in range(51)]
    for part in (names[:26], names[26:]):
        device.publish(f"devices/{device_id}/data", json.dumps(dict.fromkeys(part, 1.0)))

    async def all_metrics() -> bool:
        r = await e2e_stack.http.get(f"/api/devices/{device_id}/telemetry")
        return r.status_code == 422 and "at most 50 metrics" in r.text

    await e2e_stack.wait_for(all_metrics, timeout=15)
    page = await open_logged_in(browser, e2e_stack, f"/devices/{device_id}")
    saved: list[Any] = []
    page.on("download", lambda d: saved.append(d))
    await page.get_by_role("tab", name="History").click()
    button = page.get_by_test_id("csv")
    async with page.expect_response(_is_csv, timeout=TIMEOUT_MS) as answered:
        await button.click()
    assert (await answered.value).status == 422
    notice = page.locator(".ant-notification-notice", has_text="at most 50 metrics")
    await notice.first.wait_for(timeout=TIMEOUT_MS)
    # The button is idle again once the failed export has been handled: nothing saved.
    await page.wait_for_function(
        "() => !document.querySelector('[data-testid=csv]').classList.contains('ant-btn-loading')",
        timeout=TIMEOUT_MS,
    )
    assert saved == []
    await screenshot(page, "device-history-csv-refused")

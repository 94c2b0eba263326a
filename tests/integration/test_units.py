"""Units from the device's info to the API and CSV, on both stacks (open mode on
purpose: the `stack` fixture; this is about the data path, not who may connect)."""

from __future__ import annotations

import csv
import io

from tests.support import Stack

DECLARES = "A4CF12B3C4D6"  # sends units in its info
SILENT = "A4CF12B3C4D7"  # older firmware: no units


async def test_declared_units_reach_device_latest_history_and_csv(stack: Stack) -> None:
    device = await stack.device()
    device.publish(
        f"devices/{DECLARES}/info",
        '{"type": "esp32-env", "firmware": "1.0.0", "capabilities": ["temperature", "gas"],'
        ' "units": {"temperature": "°F", "gas": "ppm", "rssi": ""}}',
        retain=True,
    )
    device.publish(f"devices/{DECLARES}/data", b'{"temperature": 71.5, "gas": 80, "rssi": -60}')

    async def stored() -> bool:
        latest = await stack.http.get(f"/api/devices/{DECLARES}/latest")
        if latest.status_code == 404:  # not registered yet
            return False
        dev = await stack.get(f"/api/devices/{DECLARES}")
        return len(latest.json()["metrics"]) == 3 and dev["firmware_version"] == "1.0.0"

    await stack.wait_for(stored)
    dev = await stack.get(f"/api/devices/{DECLARES}")
    assert dev["units"]["temperature"] == "°F"  # declared wins over the default
    assert dev["units"]["gas"] == "ppm"
    assert "rssi" not in dev["units"]  # "" says: no unit (the default is dropped)
    assert dev["units"]["humidity"] == "%"  # defaults for the rest
    latest = (await stack.get(f"/api/devices/{DECLARES}/latest"))["metrics"]
    assert latest["temperature"]["unit"] == "°F"
    assert latest["rssi"]["unit"] is None
    history = await stack.get(f"/api/devices/{DECLARES}/telemetry")
    assert history["units"] == {"temperature": "°F", "gas": "ppm"}
    response = await stack.http.get(f"/api/devices/{DECLARES}/telemetry", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {(r["metric"], r["unit"]) for r in rows} == {
        ("temperature", "°F"),
        ("gas", "ppm"),
        ("rssi", ""),
    }


async def test_device_without_units_gets_the_known_sensors_defaults(stack: Stack) -> None:
    device = await stack.device()
    device.publish(f"devices/{SILENT}/data", b'{"temperature": 21.5, "humidity": 40, "gas": 9}')

    async def stored() -> bool:
        latest = await stack.http.get(f"/api/devices/{SILENT}/latest")
        return latest.status_code == 200 and len(latest.json()["metrics"]) == 3

    await stack.wait_for(stored)
    latest = (await stack.get(f"/api/devices/{SILENT}/latest"))["metrics"]
    assert latest["temperature"]["unit"] == "°C"
    assert latest["humidity"]["unit"] == "%"
    assert latest["gas"]["unit"] is None  # a raw ADC level: no unit is made up
    response = await stack.http.get(
        f"/api/devices/{SILENT}/telemetry", params={"format": "csv", "metric": "humidity"}
    )
    header, row = list(csv.reader(io.StringIO(response.text)))[:2]
    assert header[:4] == ["device_id", "metric", "unit", "time"]
    assert row[1:3] == ["humidity", "%"]


async def test_bad_units_are_rejected_and_counted(stack: Stack) -> None:
    device = await stack.device()
    before = (await stack.get("/api/stats"))["rejected_by_reason"].get("bad_info", 0)
    device.publish(f"devices/{SILENT}/info", '{"units": {"temperature": "' + "x" * 17 + '"}}')
    device.publish(f"devices/{SILENT}/info", b'{"units": {"bad name!": "C"}}')
    device.publish(f"devices/{SILENT}/info", b'{"units": ["C"]}')

    async def counted() -> bool:
        rejected = (await stack.get("/api/stats"))["rejected_by_reason"]
        return bool(rejected.get("bad_info", 0) - before == 3)

    await stack.wait_for(counted)

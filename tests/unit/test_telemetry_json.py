"""The chart answer is encoded straight from the rows: it must be what the model
(TelemetryPublic, the documented schema) encodes, value for value and string for string."""

from __future__ import annotations

import random

import orjson
import pytest

from iotp.api.routes.devices import telemetry_json
from iotp.api.schemas import BucketPoint, Point, TelemetryPublic, iso


def _rows(bucketed: bool) -> list[dict[str, float | int]]:
    rnd = random.Random(7)
    rows: list[dict[str, float | int]] = []
    for i in range(300):
        ts = 1_765_000_000 + i * 300 + rnd.choice([0, 0.5, 0.123456, 0.1234567])
        if bucketed:
            rows.append({"ts": ts, "avg": rnd.uniform(-40, 40), "min": -3, "max": 1e6, "count": 12})
        else:
            rows.append({"ts": ts, "value": rnd.choice([21, 21.5, 0.1 + 0.2, -0.0, 1e-9])})
    return rows


@pytest.mark.parametrize("bucketed", [False, True])
def test_the_fast_encoding_is_the_models(bucketed: bool) -> None:
    raw = {"temperature": _rows(bucketed), "gas": _rows(bucketed)[:5]}
    units = {"temperature": "°C"}
    bucket = 300.0 if bucketed else None
    fast = orjson.loads(telemetry_json("A4CF12B3C4D5", 1.5e9, 1.6e9, bucket, raw, units).body)
    series: dict[str, list[Point] | list[BucketPoint]] = {}
    for name, rows in raw.items():
        if bucketed:
            series[name] = [
                BucketPoint(
                    ts=iso(r["ts"]), avg=r["avg"], min=r["min"], max=r["max"], count=int(r["count"])
                )
                for r in rows
            ]
        else:
            series[name] = [Point(ts=iso(r["ts"]), value=r["value"]) for r in rows]
    model = TelemetryPublic(
        device_id="A4CF12B3C4D5",
        since=iso(1.5e9),
        until=iso(1.6e9),
        bucket_seconds=bucket,
        series=series,
        units=units,
    )
    assert fast == orjson.loads(model.model_dump_json())
    # Strings too: the times are the model's own ISO 8601 form.
    assert [p["ts"] for p in fast["series"]["temperature"]] == [
        p["ts"] for p in orjson.loads(model.model_dump_json())["series"]["temperature"]
    ]

"""Heavy queries from a viewer, on a real stack (devices in open mode: the broker takes
any client): one request may not ask for unbounded work."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert

from iotp.api.routes.devices import MAX_METRICS_PER_REQUEST, MAX_POINTS_PER_REQUEST
from iotp.db.engine import make_engine
from iotp.db.models import Device, Telemetry
from tests.support import OPEN, run_stack


async def test_a_request_for_too_many_metrics_or_points_is_refused(tmp_path: Path) -> None:
    async with run_stack("embedded-sqlite", tmp_path, mode=OPEN) as stack:
        dev = await stack.device("HEAVY1")
        dev.publish("devices/HEAVY1/data", '{"t": 1, "h": 2}')

        async def stored() -> bool:
            r = await stack.http.get("/api/devices/HEAVY1/telemetry", params={"metric": "t"})
            return r.status_code == 200 and bool(r.json()["series"]["t"])

        await stack.wait_for(stored)
        metrics = [f"m{i}" for i in range(1500)]
        for fmt in ("json", "csv"):
            r = await stack.http.get(
                "/api/devices/HEAVY1/telemetry", params={"metric": metrics, "format": fmt}
            )
            assert r.status_code == 422, fmt
            assert str(MAX_METRICS_PER_REQUEST) in r.json()["detail"]
        # Repeating one name is one metric.
        r = await stack.http.get("/api/devices/HEAVY1/telemetry", params={"metric": ["t"] * 100})
        assert r.status_code == 200
        assert len(r.json()["series"]["t"]) == 1

        # More raw points than the budget: refused with the limit named, not truncated.
        rows = [
            {"device_id": "HEAVY1", "ts": 1_000_000 + i, "seq": 0, "metrics": {"p": i}}
            for i in range(MAX_POINTS_PER_REQUEST + 1)
        ]
        engine = make_engine(stack.settings.effective_database_url)
        async with engine.begin() as conn:
            await conn.execute(insert(Telemetry), rows)
            # a device with no metric stored yet: its chart is empty, not an error
            await conn.execute(
                insert(Device).values(id="QUIET1", name="QUIET1", capabilities=[], first_seen=0.0)
            )
            await conn.execute(
                insert(Telemetry).values(
                    device_id="QUIET1", ts=1_000_000, seq=0, metrics={}, attributes={"fw": "x"}
                )
            )
        await engine.dispose()
        for bucket in ("auto", "60"):
            r = await stack.http.get(
                "/api/devices/QUIET1/telemetry",
                params={"since": "999000", "until": "1999000", "bucket": bucket},
            )
            assert r.status_code == 200, r.text
            assert r.json()["series"] == {}
        for fmt in ("json", "csv"):
            r = await stack.http.get(
                "/api/devices/HEAVY1/telemetry",
                params={"metric": "p", "since": "999999", "until": "2000000", "format": fmt},
                timeout=120,  # 100,001 rows read on a loaded CI machine
            )
            assert r.status_code == 422, fmt
            assert str(MAX_POINTS_PER_REQUEST) in r.json()["detail"]
        r = await stack.http.get(
            "/api/devices/HEAVY1/telemetry",
            params={"metric": "p", "since": "999999", "until": "2000000", "bucket": "3600"},
        )
        assert r.status_code == 200

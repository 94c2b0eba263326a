"""Per-device message rate limit in the worker: the excess of a flooding device is
rejected and counted as rate_limited; a well-behaved device is unaffected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import OPEN, run_stack


async def test_flooding_device_is_limited_and_others_are_not(tmp_path: Path) -> None:
    async with run_stack("embedded-sqlite", tmp_path, mode=OPEN, device_rate_limit=2.0) as stack:
        flood = await stack.device("FLOOD1")
        calm = await stack.device("CALM1")
        for seq in range(60):
            flood.publish("devices/FLOOD1/data", f'{{"t": 1, "seq": {seq}}}')
        for seq in range(5):
            calm.publish("devices/CALM1/data", f'{{"t": 2, "seq": {seq}}}')

        async def settled() -> Any:
            s = await stack.get("/api/stats")
            done = s["messages_stored"] + s["messages_rejected"] == 65
            return s if done else None

        stats = await stack.wait_for(settled)
        limited = stats["rejected_by_reason"].get("rate_limited", 0)
        # A 2/s bucket bursts 10; the flood takes well under its 5 s of refill.
        assert 40 <= limited <= 50
        assert stats["messages_stored"] == 65 - limited
        calm_rows = await stack.get("/api/devices/CALM1/telemetry", metric="t")
        assert len(calm_rows["series"]["t"]) == 5

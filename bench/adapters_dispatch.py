"""What the adapters cost the platform's own ingest, and how fast a foreign message is
translated: the worker's message dispatch (``Worker._on_message``) driven in process, no
broker, no database writes (rows go to the batcher, which is not flushed). Devices here
are message sources only, no authentication is involved (open mode on purpose).

Three timings, each the best of --rounds:
  1. the platform's own telemetry with the three shipped mappings on,
  2. the same with every mapping off (IOTP_ADAPTERS_*=false),
  3. Tasmota SENSOR messages (translated, then the same ingest path).
Reported: microseconds per message and the ratio of 1 to 2 (target: <= 1.05).

    python bench/adapters_dispatch.py --messages 50000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from iotp.db import migrate  # noqa: E402
from iotp.db.engine import make_engine  # noqa: E402
from iotp.settings import Settings  # noqa: E402
from iotp.worker.service import Worker  # noqa: E402

DEVICES = 100
SENSOR = orjson.dumps(
    {
        "Time": "2024-02-24T22:20:38",
        "AM2301": {"Temperature": 22.4, "Humidity": 45.1},
        "TempUnit": "C",
    }
)


async def _worker(tmp: Path, adapters: bool) -> Worker:
    settings = Settings(
        data_dir=tmp,
        database_url=f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
        open=True,
        batch_max_rows=10_000_000,
        adapters_tasmota=adapters,
        adapters_zigbee2mqtt=adapters,
        adapters_shelly=adapters,
    )
    engine = make_engine(settings.effective_database_url)
    await migrate.upgrade(engine)
    worker = Worker(settings, engine, "mqtt://127.0.0.1:1")
    for i in range(DEVICES):
        worker.ingestor.known.add(f"D{i}")
        worker.ingestor.known.add(f"tasmota-t{i}")
        worker.adapters.engine.bind(f"tasmota-t{i}", "tasmota", {"topic": f"t{i}"})
        if adapters:  # registered already: its info is sent, as in a running worker
            worker.adapters.engine.translate(f"tele/t{i}/SENSOR", SENSOR)
    return worker


def _time(worker: Worker, messages: list[tuple[str, bytes]]) -> float:
    handle = worker._on_message
    start = time.perf_counter()
    for topic, payload in messages:
        handle(topic, payload, 1, False)
    return (time.perf_counter() - start) / len(messages) * 1e6


async def main(count: int, rounds: int) -> None:
    native = [
        (
            f"devices/D{i % DEVICES}/data",
            orjson.dumps({"temperature": 20.5, "humidity": 40, "gas": 80, "seq": i}),
        )
        for i in range(count)
    ]
    sensor = orjson.dumps(
        {
            "Time": "2024-02-24T22:20:38",
            "AM2301": {"Temperature": 22.4, "Humidity": 45.1},
            "TempUnit": "C",
        }
    )
    foreign = [(f"tele/t{i % DEVICES}/SENSOR", sensor) for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp_on, tempfile.TemporaryDirectory() as tmp_off:
        on = await _worker(Path(tmp_on), True)
        off = await _worker(Path(tmp_off), False)
        best_on = best_off = best_foreign = float("inf")
        for _ in range(rounds):
            best_off = min(best_off, _time(off, native))
            best_on = min(best_on, _time(on, native))
            best_foreign = min(best_foreign, _time(on, foreign))
            for w in (on, off):  # drop the unflushed rows between rounds
                w.ingestor.batcher._current.rows.clear()
        print(f"own telemetry, adapters on : {best_on:6.2f} us/msg")
        print(f"own telemetry, adapters off: {best_off:6.2f} us/msg")
        print(f"ratio on/off               : {best_on / best_off:6.3f} (target <= 1.05)")
        print(f"Tasmota SENSOR, translated : {best_foreign:6.2f} us/msg")
        for w in (on, off):
            await w.engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.rounds))

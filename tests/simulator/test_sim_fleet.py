"""The fleet simulator against Mosquitto: everyone online, data flowing, clean shutdown."""

from __future__ import annotations

import asyncio
import json
import re

from iotp.simulator import Fleet, node_ids, run_simulation
from tests.firmware.fwlink import run_broker, wait_until


def test_node_ids_are_deterministic_and_valid() -> None:
    ids = node_ids(200, seed=7)
    assert ids == node_ids(200, seed=7)
    assert ids != node_ids(200, seed=8)
    assert ids != node_ids(200, seed=7, id_prefix="OTHER")
    assert len(set(ids)) == 200
    assert all(re.fullmatch(r"[0-9A-F]{12}", node) for node in ids)
    assert node_ids(3) == node_ids(3, seed=0)


async def test_fleet_online_reporting_and_clean_shutdown() -> None:
    devices = 30
    async with run_broker("mosquitto") as broker:
        observer = await broker.observer()
        await observer.subscribe("devices/+/data")
        await observer.subscribe("devices/+/status")
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            run_simulation(
                devices=devices, broker_url=broker.url, interval=0.5, seed=3, stop=stop, ready=ready
            )
        )
        ids = set(node_ids(devices, seed=3))
        status: dict[str, bytes] = {}
        seqs: dict[str, list[int]] = {}

        def drain() -> None:
            while not observer.messages.empty():
                topic, payload = observer.messages.get_nowait()
                node, leaf = topic.split("/")[1:3]
                assert node in ids
                if leaf == "status":
                    status[node] = payload
                else:
                    sample = json.loads(payload)
                    assert {"temperature", "humidity", "gas", "seq", "ts"} <= set(sample) or {
                        "gas",
                        "seq",
                        "ts",
                    } <= set(sample)  # a DHT22 read can fail
                    seqs.setdefault(node, []).append(sample["seq"])

        try:
            await asyncio.wait_for(ready.wait(), 15)

            def everyone_reported() -> bool:
                drain()
                return set(seqs) == ids and all(len(got) >= 2 for got in seqs.values())

            await wait_until(everyone_reported, timeout=15)
            assert set(status) == ids
            assert set(status.values()) == {b"online"}
            assert set(seqs) == ids
            for got in seqs.values():
                assert got == sorted(got)
                assert len(got) >= 2
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
        await wait_until(lambda: (drain(), set(status.values()) == {b"offline"})[1], timeout=5)
        await observer.close()


async def test_fleet_reports_stats_and_survives_a_broker_restart() -> None:
    async with run_broker("amqtt") as broker:
        fleet = Fleet(devices=5, broker_url=broker.url, interval=0.5, connect_rate=100)
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(fleet.run(stop=stop, ready=ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await wait_until(lambda: fleet.stats()["published"] >= 10)
            for sim in fleet.devices:
                sim.device.mqtt.kill()  # every link drops at once
            await wait_until(lambda: fleet.stats()["connected"] == 5, timeout=10)
            assert all(sim.device.mqtt.connects == 2 for sim in fleet.devices)
        finally:
            stop.set()
            await task
        stats = fleet.stats()
        assert stats["devices"] == 5
        assert stats["dropped"] == 0

"""Scale-out, natively: 2 workers sharing $share/scale/devices/# and 2 API processes on
Mosquitto + PostgreSQL, started as in production (`python -m iotp.cli worker|api`).
Exact counts, nothing stored twice, every WebSocket client of each API sees every event,
and presence judged by one leader (not flapping, not recorded twice)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from bench._harness import raw_publish
from tests.fault.procs import STARTING, Cluster, LiveClient, pg_value, run_cluster
from tests.support import MqttTestClient, eventually, mosquitto_server, pg_database

# One cluster for the module (starting 4 processes is the slow part); the test that kills
# the leader runs last.
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.mosquitto,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
]

DEVICES = 20
MESSAGES = 4000
EVENTS = ["device_data", "device_registered", "device_status"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    tmp_path = tmp_path_factory.mktemp("scale")
    with mosquitto_server() as mosq:
        async with (
            pg_database(migrated=True) as dsn,
            run_cluster(
                "scale",
                tmp_path,
                dsn,
                mosq.url,
                workers=2,
                apis=2,
                worker_metrics=True,
                mqtt_share_group="scale",
                offline_min_seconds=4,
                default_report_interval=0.5,
                # The four WebSocket clients share this test process and read slower than
                # the burst arrives; the API's per-client queue (default 1,000) would drop
                # events for them by design ("dropped" notices). Room for the whole
                # burst: counts stay exact.
                ws_client_queue=MESSAGES * 2,
            ) as cluster,
        ):
            yield cluster


async def metric(port: int, name: str) -> float | None:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_two_workers_two_apis_exact_and_live(cluster: Cluster) -> None:
    # Exactly one leader (presence, maintenance).
    async def one_leader() -> bool:
        leaders = [await metric(p, "iotp_worker_leader") for p in cluster.metrics_ports]
        return sorted(leaders) == [0.0, 1.0]

    await eventually(one_leader, timeout=30, retry_on=STARTING)

    clients = [LiveClient(port, EVENTS).start() for _, port in cluster.apis for _ in range(2)]
    try:
        # "subscribed" means live: each API answers once the broker has acknowledged its
        # on-demand data subscription, so publishing right away loses nothing.
        for c in clients:
            await asyncio.wait_for(c.subscribed.wait(), 30)
        await raw_publish(cluster.mqtt_url, devices=DEVICES, messages=MESSAGES, prefix="SCALE")

        async def stored() -> bool:
            return await pg_value(cluster.db_url, "SELECT count(*) FROM telemetry") >= MESSAGES

        await eventually(stored, timeout=60, retry_on=STARTING)

        async def everyone_saw_everything() -> bool:
            return all(c.count("device_data") >= MESSAGES for c in clients) and all(
                c.count("device_registered") >= DEVICES for c in clients
            )

        try:
            await eventually(everyone_saw_everything, timeout=30, retry_on=STARTING)
        except AssertionError:
            seen = [{t: c.count(t) for t in [*EVENTS, "dropped"]} for c in clients]
            raise AssertionError(f"events seen by each client: {seen}") from None
        await asyncio.sleep(1.0)  # bounded: anything extra (a duplicate) would arrive by now

        assert await pg_value(cluster.db_url, "SELECT count(*) FROM telemetry") == MESSAGES
        assert await pg_value(cluster.db_url, "SELECT count(*) FROM devices") == DEVICES
        for c in clients:
            assert c.count("dropped") == 0
            assert c.count("device_data") == MESSAGES
            assert c.count("device_registered") == DEVICES
            # Exactly one online transition per device: the leader's, not one per worker.
            online = [
                e
                for e in c.received
                if e["type"] == "device_status" and e["payload"]["status"] == "online"
            ]
            assert len(online) == DEVICES, online
            seqs = {
                (e["device_id"], e["payload"]["seq"])
                for e in c.received
                if e["type"] == "device_data"
            }
            assert len(seqs) == MESSAGES

        # Both workers took a share; together they stored each message exactly once.
        shares = []
        for port in cluster.metrics_ports:
            shares.append(await metric(port, "iotp_messages_stored_total") or 0)
        assert sum(shares) == MESSAGES
        assert all(s > 0 for s in shares), shares
    finally:
        for c in clients:
            await c.close()


async def test_presence_with_shared_subscriptions(cluster: Cluster) -> None:
    """A device whose messages are split over two workers stays online while it talks,
    and goes offline exactly once (by the leader's timeout) when it stops."""
    dev = await MqttTestClient(cluster.mqtt_url, "PRESENCE1").connect()
    try:
        for i in range(16):  # 8 s at 2 Hz: longer than the 4 s timeout
            dev.publish("devices/PRESENCE1/data", f'{{"t": {i}, "seq": {i}}}')
            await asyncio.sleep(0.5)  # paced: the device talks at 2 Hz
    finally:
        await dev.close()

    async def offline() -> bool:
        status = await pg_value(cluster.db_url, "SELECT status FROM devices WHERE id = 'PRESENCE1'")
        return status == "offline"

    await eventually(offline, timeout=20, retry_on=STARTING)
    # Bounded: a second (wrong) transition from another worker would be here by now.
    await asyncio.sleep(2.5)
    rows = await pg_value(
        cluster.db_url,
        "SELECT string_agg(data->>'status' || ':' || (data->>'reason'), ',' ORDER BY id) "
        "FROM device_events WHERE device_id = 'PRESENCE1' AND type = 'status'",
    )
    assert rows == "online:data,offline:timeout"


async def test_leadership_moves_when_the_leader_dies(cluster: Cluster) -> None:
    async def leader_index() -> int | None:
        for i, port in enumerate(cluster.metrics_ports):
            if await metric(port, "iotp_worker_leader") == 1.0:
                return i + 1  # truthy
        return None

    first = await eventually(leader_index, timeout=30, retry_on=STARTING) - 1
    cluster.workers[first].kill()
    other = 1 - first

    async def other_leads() -> bool:
        return await metric(cluster.metrics_ports[other], "iotp_worker_leader") == 1.0

    await eventually(other_leads, timeout=30, retry_on=STARTING)

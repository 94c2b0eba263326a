"""The platform on RabbitMQ, natively: 2 workers competing on one quorum queue bound to
amq.topic (IOTP_WORKER_SOURCE=amqp), an API process, PostgreSQL, and devices publishing
QoS 1 through RabbitMQ's MQTT plugin, each test in a vhost of its own.

Exact counts, nothing stored twice, the load split between the workers; a worker
SIGKILLed mid-stream loses nothing (its unacknowledged deliveries are redelivered);
the API's live events still reach WebSocket clients."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from bench._harness import raw_publish
from tests.fault.procs import STARTING, LiveClient, Proc, pg_value, run_cluster, workers_connected
from tests.support import RabbitVhost, eventually, pg_database, rabbitmq_queue, rabbitmq_vhost

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
]


@dataclass
class Cluster:
    dsn: str
    vhost: RabbitVhost
    queue: str
    workers: list[Proc]
    api: tuple[Proc, int]

    async def stored(self, prefix: str = "") -> int:
        """Telemetry rows, of the devices whose ids start with prefix: another test's
        stream may still be landing (a test that reads its messages live does not wait
        for their rows)."""
        assert prefix.isalnum() or not prefix
        where = f" WHERE device_id LIKE '{prefix}%'" if prefix else ""
        return int(await pg_value(self.dsn, f"SELECT count(*) FROM telemetry{where}"))

    async def worker_stats(self) -> dict[str, dict[str, int]]:
        """component id -> counters (flushed every 0.5 s by each worker)."""
        rows = await pg_value(
            self.dsn,
            "SELECT json_object_agg(component_id, data) FROM component_stats WHERE kind = 'worker'",
        )
        import orjson

        data: dict[str, dict[str, int]] = orjson.loads(rows) if rows else {}
        return data


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    tmp_path = tmp_path_factory.mktemp("rabbit")
    queue = f"iotp.telemetry.{uuid.uuid4().hex[:6]}"
    async with (
        rabbitmq_vhost() as vhost,
        pg_database(migrated=True) as dsn,
        run_cluster(
            "rabbit",
            tmp_path,
            dsn,
            vhost.mqtt_url(),
            workers=2,
            apis=1,
            worker_source="amqp",
            amqp_url=vhost.amqp_url,
            amqp_queue=queue,
            offline_min_seconds=4,
            default_report_interval=0.5,
        ) as procs,
    ):
        yield Cluster(dsn, vhost, queue, procs.workers, procs.apis[0])


async def _connected(dsn: str, since: float) -> bool:
    return await workers_connected(dsn, since) == 2


async def test_two_workers_share_the_queue_exactly_once(cluster: Cluster) -> None:
    devices, messages = 20, 4000
    before = await cluster.stored()
    elapsed = await raw_publish(
        cluster.vhost.mqtt_url(), devices=devices, messages=messages, prefix="RMQA"
    )
    assert elapsed > 0  # every QoS 1 message was PUBACKed by RabbitMQ's MQTT plugin

    async def all_stored() -> bool:
        return await cluster.stored() >= before + messages

    await eventually(all_stored, timeout=60, retry_on=STARTING)
    await asyncio.sleep(1.5)  # bounded: a duplicate would land by now; stats are flushed
    assert await cluster.stored() == before + messages
    count = await pg_value(cluster.dsn, "SELECT count(*) FROM devices WHERE id LIKE 'RMQA%'")
    assert count == devices

    stats = await cluster.worker_stats()
    shares = {cid: s["stored"] for cid, s in stats.items()}
    assert sum(shares.values()) == messages, shares  # stored once, by one worker each
    assert len(shares) == 2, shares
    assert all(n > 0 for n in shares.values()), shares  # the load was split
    assert sum(s["duplicates"] for s in stats.values()) == 0, stats  # nothing delivered twice

    # Every delivery was acknowledged: nothing left in the queue, ready or unacked.
    async def queue_empty() -> bool:
        q = await rabbitmq_queue(cluster.vhost, cluster.queue)
        return q.get("consumers") == 2 and q.get("messages", -1) == 0

    await eventually(queue_empty, timeout=30, interval=1.0, retry_on=STARTING)


async def test_foreign_firmware_reaches_the_queue_input(cluster: Cluster) -> None:
    """A Tasmota's documented messages (tests/adapter_payloads.py) through RabbitMQ's MQTT
    plugin: the queue is bound to the adapters' topics too (the cluster's vhost is open to
    its admin user: no device accounts here)."""
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv311

    from iotp.settings import MqttUrl
    from tests import adapter_payloads as fx

    url = MqttUrl(cluster.vhost.mqtt_url())
    client = gmqtt.Client(f"tasmota-{uuid.uuid4().hex[:6]}")
    client.set_config({"reconnect_retries": 0})
    client.set_auth_credentials(url.username or "", url.password)
    await client.connect(url.host, url.port, version=MQTTv311, keepalive=30)
    try:
        client.publish(*fx.TASMOTA_LWT_ONLINE, qos=1)
        client.publish(*fx.TASMOTA_SENSOR, qos=1)

        async def stored() -> bool:
            count = await pg_value(
                cluster.dsn, f"SELECT count(*) FROM telemetry WHERE device_id = '{fx.TASMOTA_ID}'"
            )
            return int(count) >= 1

        await eventually(stored, timeout=30, retry_on=STARTING)
        kind = await pg_value(cluster.dsn, f"SELECT type FROM devices WHERE id = '{fx.TASMOTA_ID}'")
        assert kind == "tasmota"
    finally:
        await client.disconnect()


async def test_live_events_reach_websocket_clients(cluster: Cluster) -> None:
    devices, messages = 4, 200
    port = cluster.api[1]
    client = LiveClient(port, ["device_registered", "device_status", "device_data"]).start()
    try:
        # "subscribed" comes once the broker has acknowledged the API's on-demand data
        # subscription: publishing right away loses nothing.
        await asyncio.wait_for(client.subscribed.wait(), 30)
        await raw_publish(
            cluster.vhost.mqtt_url(), devices=devices, messages=messages, prefix="RMQLIVE"
        )
        expected = {f"RMQLIVE{i:06d}" for i in range(devices)}

        def seen(kind: str) -> set[str]:
            return {e["device_id"] for e in client.received if e["type"] == kind}

        async def everything_seen() -> bool:
            data = {
                (e["device_id"], e["payload"]["seq"])
                for e in client.received
                if e["type"] == "device_data" and e["device_id"] in expected
            }
            return (
                len(data) == messages
                and expected <= seen("device_registered")
                and expected <= seen("device_status")  # online, from the leader
            )

        try:
            await eventually(everything_seen, timeout=30, retry_on=STARTING)
        except AssertionError:
            kinds = [e["type"] for e in client.received]
            print({k: kinds.count(k) for k in set(kinds)}, seen("device_status"))
            print(f"---- API\n{cluster.api[0].tail()}")
            raise
    finally:
        await client.close()


async def test_worker_killed_mid_stream_loses_nothing(cluster: Cluster) -> None:
    """SIGKILL: no flush, no goodbye. RabbitMQ requeues the dead worker's unacknowledged
    deliveries for the other worker; the restarted worker joins in again."""
    total, prefix = 6000, "RMQKILL"
    before = await cluster.stored(prefix)
    publishing = asyncio.create_task(
        raw_publish(cluster.vhost.mqtt_url(), devices=10, messages=total, rate=1000, prefix=prefix)
    )
    victim = cluster.workers[0]
    try:

        async def underway() -> bool:
            return await cluster.stored(prefix) >= before + 1500

        await eventually(underway, timeout=30, retry_on=STARTING)
        victim.kill()
        assert await cluster.stored(prefix) < before + total
        await asyncio.sleep(1.0)  # the worker stays dead a moment while the stream goes on
        restarted = time.time()
        victim.start()
        await asyncio.wait_for(publishing, 60)

        async def all_stored() -> bool:
            return await cluster.stored(prefix) >= before + total

        await eventually(all_stored, timeout=60, retry_on=STARTING)
        await asyncio.sleep(1.0)  # bounded: a duplicate would land by now
        assert await cluster.stored(prefix) == before + total  # nothing lost, nothing twice
        await eventually(lambda: _connected(cluster.dsn, restarted), timeout=60, retry_on=STARTING)
    except BaseException:
        for p in cluster.workers:
            print(f"---- {p.log.name}\n{p.tail()}")
        raise
    finally:
        if not publishing.done():
            publishing.cancel()

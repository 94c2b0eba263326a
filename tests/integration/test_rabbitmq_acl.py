"""Secure mode on the real RabbitMQ (MQTT plugin, management API), in a vhost of its own:
device users and topic permissions kept by iotp.broker.rabbitmq. A device may publish
only its own topics and read only its own commands; a wrong password, a pending device
and a revoked one are refused, and revoking disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from iotp.broker.rabbitmq import (
    Management,
    RabbitMQSync,
    management,
    store_device_secret,
    vhost_permissions,
)
from iotp.db import migrate
from iotp.db.engine import make_engine
from iotp.services import credentials as cred_service
from iotp.settings import Settings
from tests.integration.test_broker_acl import FLEET, Client, Refused, secure_settings
from tests.support import (
    OPEN,
    RABBITMQ_HOST,
    RABBITMQ_MQTT_PORT,
    RabbitVhost,
    create_rabbitmq_vhost,
    delete_rabbitmq_vhost,
    run_stack,
)

pytestmark = [pytest.mark.rabbitmq]

MQTT_URL = f"mqtt://{RABBITMQ_HOST}:{RABBITMQ_MQTT_PORT}"


# RabbitMQ users are global (not per vhost): device names of their own per run.
RUN = uuid.uuid4().hex[:6]
A1 = f"A1-{RUN}"
B2 = f"B2-{RUN}"
P3 = f"P3-{RUN}"
Q4 = f"Q4-{RUN}"
Q5 = f"Q5-{RUN}"
R7 = f"R7-{RUN}"
S8 = f"S8-{RUN}"


@dataclass
class Rabbit:
    vhost: RabbitVhost
    settings: Settings
    engine: AsyncEngine
    api: Management
    sync: RabbitMQSync
    clients: list[Client] = field(default_factory=list)

    async def connect(self, client_id: str, user: str, password: str) -> Client:
        client = Client(MQTT_URL, client_id, f"{self.vhost.name}:{user}", password)
        self.clients.append(client)
        return await client.connect()

    async def service(self) -> Client:
        s = self.settings
        return await self.connect(
            "svc-observer", s.mqtt_service_account("worker"), s.mqtt_service_password("worker")
        )

    async def issue(self, device_id: str) -> str:
        """As POST /api/credentials/{id} does: RabbitMQ gets the password, then commit."""
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            _, secret = await cred_service.issue(session, device_id=device_id)
            await store_device_secret(self.settings, device_id, secret, approved=True)
            await session.commit()
        return secret

    async def change(self, fn: Any) -> None:
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            await fn(session)
            await session.commit()
        await self.sync.sync()


@pytest.fixture
async def rabbit(tmp_path: Path) -> AsyncIterator[Rabbit]:
    vhost = await create_rabbitmq_vhost("iotp_acl")
    settings = secure_settings(
        tmp_path,
        rabbitmq_management_url=vhost.management_url,
        rabbitmq_vhost=vhost.name,
        mqtt_service_user=f"iotp-{RUN}",
    )
    engine = make_engine(settings.effective_database_url)
    await migrate.upgrade(engine)
    api = management(settings)
    assert api is not None
    sync = RabbitMQSync(settings, engine, api)
    await sync.ensure_service_accounts()
    await sync.sync()
    r = Rabbit(vhost, settings, engine, api, sync)
    try:
        yield r
    finally:
        for c in r.clients:
            await c.close()
        await engine.dispose()
        users = await api.users()
        for name in (A1, B2, P3, *settings.mqtt_service_accounts()):  # users are global
            if name in users:
                await api.delete_user(name)
        await delete_rabbitmq_vhost(vhost)


async def _silent(client: Client, seconds: float = 1.0) -> bool:
    with contextlib.suppress(TimeoutError):
        await client.next(seconds)
        return False
    return True


async def test_a_device_publishes_and_reads_only_its_own_topics(rabbit: Rabbit) -> None:
    a1 = await rabbit.issue(A1)
    b2 = await rabbit.issue(B2)
    observer = await rabbit.service()
    assert await observer.subscribe("devices/#") == 1

    dev = await rabbit.connect(A1, A1, a1)
    assert await dev.subscribe(f"devices/{A1}/commands") == 1
    dev.publish(f"devices/{A1}/data", '{"t": 1}')
    assert await observer.next() == (f"devices/{A1}/data", b'{"t": 1}')

    # Its own commands reach it (from the platform's account).
    observer.publish(f"devices/{A1}/commands", '{"id": "c1"}')
    topic, _ = await dev.next()
    assert topic == f"devices/{A1}/commands"

    # Another device's commands: the subscription is refused (or the link dropped).
    spy = await rabbit.connect(f"{A1}-spy", A1, a1)
    with contextlib.suppress(TimeoutError):
        assert await spy.subscribe(f"devices/{B2}/commands") == 0x80
    observer.publish(f"devices/{B2}/commands", '{"id": "c2"}')
    assert await _silent(spy)

    # Speaking for another device: refused, nothing reaches the platform.
    forger = await rabbit.connect(f"{A1}-forger", A1, a1)
    forger.publish(f"devices/{B2}/data", '{"forged": 1}')
    await asyncio.sleep(1.0)  # bounded: what RabbitMQ would have routed arrives by now
    while not observer.messages.empty():
        topic, _ = observer.messages.get_nowait()
        assert topic != f"devices/{B2}/data"

    # The right device may.
    good = await rabbit.connect(B2, B2, b2)
    good.publish(f"devices/{B2}/data", '{"t": 2}')
    seen = [await observer.next() for _ in range(1)]
    assert (f"devices/{B2}/data", b'{"t": 2}') in seen

    with pytest.raises(Refused):
        await rabbit.connect(f"{A1}-wrong", A1, "not-the-secret-0123456789")


async def test_revoked_device_is_disconnected_and_refused(rabbit: Rabbit) -> None:
    secret = await rabbit.issue(A1)
    dev = await rabbit.connect(A1, A1, secret)

    async def revoke(session: AsyncSession) -> None:
        await cred_service.revoke(session, device_id=A1)

    await rabbit.change(revoke)
    await asyncio.wait_for(dev.disconnected.wait(), 10)
    with pytest.raises(Refused):
        await rabbit.connect(f"{A1}-again", A1, secret)
    assert A1 not in await rabbit.api.users()


async def test_rotation_replaces_the_password(rabbit: Rabbit) -> None:
    old = await rabbit.issue(A1)
    dev = await rabbit.connect(A1, A1, old)
    new = await rabbit.issue(A1)
    await asyncio.wait_for(dev.disconnected.wait(), 10)  # connected with the old one
    with pytest.raises(Refused):
        await rabbit.connect(f"{A1}-old", A1, old)
    await rabbit.connect(f"{A1}-new", A1, new)


async def test_pending_device_waits_for_approval(rabbit: Rabbit) -> None:
    """Provisioning: the device's own secret reaches RabbitMQ with its request; it may
    connect once approved."""
    secret = "p3-made-this-secret-up-0123456789"
    async with AsyncSession(rabbit.engine, expire_on_commit=False) as session:
        status = await cred_service.request(
            session, device_id=P3, secret=secret, auto_approve=False
        )
        await store_device_secret(rabbit.settings, P3, secret, approved=False)
        await session.commit()
    assert status == "pending"
    with pytest.raises(Refused):
        await rabbit.connect(P3, P3, secret)

    async def approve(session: AsyncSession) -> None:
        await cred_service.approve(session, device_id=P3)

    await rabbit.change(approve)
    dev = await rabbit.connect(P3, P3, secret)
    observer = await rabbit.service()
    assert await observer.subscribe("devices/#") == 1
    dev.publish(f"devices/{P3}/data", orjson.dumps({"t": 3}))
    assert (await observer.next())[0] == f"devices/{P3}/data"


async def test_provisioning_account(rabbit: Rabbit) -> None:
    """`provision` (fleet secret) may ask and read answers, and nothing else."""
    prov = await rabbit.connect(Q4, "provision", FLEET)
    assert await prov.subscribe(f"provision/{Q4}/response") == 1
    observer = await rabbit.service()
    assert await observer.subscribe("provision/+/request") == 1
    prov.publish(f"provision/{Q4}/request", '{"secret": "x"}')
    assert (await observer.next())[0] == f"provision/{Q4}/request"
    sneaky = await rabbit.connect(Q5, "provision", FLEET)
    with contextlib.suppress(TimeoutError):
        assert await sneaky.subscribe("devices/#") == 0x80


async def test_api_issue_gives_rabbitmq_the_password(tmp_path: Path) -> None:
    """POST /api/credentials/{id} through the real API: RabbitMQ gets the password before
    the credentials are committed, or the request fails with 503 and nothing changes."""
    vhost = await create_rabbitmq_vhost("iotp_acl_api")
    try:
        extra = {"rabbitmq_management_url": vhost.management_url, "rabbitmq_vhost": vhost.name}
        async with run_stack("embedded-sqlite", tmp_path, mode=OPEN, **extra) as stack:
            response = await stack.http.post(f"/api/credentials/{R7}")
            assert response.status_code == 201, response.text
            secret = response.json()["password"]
            client = Client(MQTT_URL, R7, f"{vhost.name}:{R7}", secret)
            await client.connect()
            assert await client.subscribe(f"devices/{R7}/commands") == 1
            await client.close()

            stack.settings.rabbitmq_management_url = "http://guest:guest@127.0.0.1:1"
            response = await stack.http.post(f"/api/credentials/{S8}")
            assert response.status_code == 503, response.text
            assert "RabbitMQ" in response.json()["detail"]
            assert (await stack.http.get(f"/api/credentials/{S8}")).status_code == 404
    finally:
        api = Management(vhost.management_url)
        await api.delete_user(R7)
        await delete_rabbitmq_vhost(vhost)


def test_queue_permissions_are_exact() -> None:
    """A device reaches only its own MQTT session queues, not those of an id extending it."""
    import re

    pattern = vhost_permissions("A1")["configure"]
    assert re.fullmatch(pattern, "mqtt-subscription-A1qos1")
    assert re.fullmatch(pattern, "amq.topic")
    assert not re.fullmatch(pattern, "mqtt-subscription-A10qos1")
    assert not re.fullmatch(pattern, "iotp.telemetry")


async def test_home_assistant_account(tmp_path: Path) -> None:
    """Home Assistant's account (IOTP_HOMEASSISTANT_DISCOVERY): discovery configs and
    readings in, its own command topics out; a device's commands, a device's topics and
    the configs themselves are refused (the attack: a second client observing)."""
    vhost = await create_rabbitmq_vhost("iotp_ha")
    settings = secure_settings(
        tmp_path,
        rabbitmq_management_url=vhost.management_url,
        rabbitmq_vhost=vhost.name,
        mqtt_service_user=f"iotp-{RUN}",
        homeassistant_discovery=True,
    )
    engine = make_engine(settings.effective_database_url)
    await migrate.upgrade(engine)
    api = management(settings)
    assert api is not None
    sync = RabbitMQSync(settings, engine, api)
    await sync.ensure_service_accounts()
    r = Rabbit(vhost, settings, engine, api, sync)
    try:
        password = settings.homeassistant_mqtt_password()
        ha = await r.connect(f"homeassistant-{RUN}", "homeassistant", password)
        assert await ha.subscribe("homeassistant/#") == 1
        assert await ha.subscribe("devices/+/data") == 1
        observer = await r.service()
        assert await observer.subscribe("#") == 1
        # configs and readings reach it
        observer.publish(f"homeassistant/sensor/{A1}/temperature/config", "{}")
        observer.publish(f"devices/{A1}/data", '{"temperature": 21}')
        seen = {(await ha.next())[0], (await ha.next())[0]}
        assert seen == {f"homeassistant/sensor/{A1}/temperature/config", f"devices/{A1}/data"}
        for _ in range(2):  # the observer's own two
            await observer.next()
        # RabbitMQ closes a connection whose publish is refused: one client per attempt,
        # then an allowed command as the marker the observer must see first.
        forged = [
            (f"devices/{A1}/commands", '{"id": "forged", "command": "reboot"}'),
            (f"devices/{A1}/data", '{"temperature": -99}'),
            (f"homeassistant/switch/{A1}/relay_light/config", ""),
        ]
        for n, (topic, payload) in enumerate(forged):
            attacker = await r.connect(f"homeassistant-{RUN}-{n}", "homeassistant", password)
            attacker.publish(topic, payload)
            marker = f"iotp-ha/{A1}/relay_light/set"
            ha.publish(marker, f"ON {n}")
            assert await observer.next() == (marker, f"ON {n}".encode()), topic
        sneaky = await r.connect(f"homeassistant-{RUN}-s", "homeassistant", password)
        with contextlib.suppress(TimeoutError):
            assert await sneaky.subscribe("devices/+/commands") == 0x80
        # Under another client id it has no subscription queue (it could reach the
        # platform's own sessions' queues otherwise).
        other = await r.connect(f"iotp.other-{RUN}", "homeassistant", password)
        with contextlib.suppress(TimeoutError):
            assert await other.subscribe("homeassistant/#") == 0x80
    finally:
        for c in r.clients:
            await c.close()
        await engine.dispose()
        users = await api.users()
        for name in ("homeassistant", *settings.mqtt_service_accounts()):
            if name in users:
                await api.delete_user(name)
        await delete_rabbitmq_vhost(vhost)


async def test_a_foreign_clients_account_stays_on_its_mappings_topics(rabbit: Rabbit) -> None:
    """A Tasmota's account (iotp.services.adapters) on RabbitMQ: its own tele/stat topics
    and its commands, never another Tasmota's nor the platform's; the attack as in
    tests/integration/test_adapters.py."""
    from iotp.services import adapters as adapter_service

    user, scope, other = f"tasmota-{RUN}", f"kt{RUN}", f"ko{RUN}"
    async with AsyncSession(rabbit.engine, expire_on_commit=False) as session:
        row, secret = await adapter_service.issue_account(
            session, settings=rabbit.settings, mapping_name="tasmota", username=user, scope=scope
        )
        await store_device_secret(
            rabbit.settings, user, secret, approved=True, acl=dict(row.acl or {})
        )
        await session.commit()
    try:
        observer = await rabbit.service()
        assert await observer.subscribe("tele/#") == 1
        assert await observer.subscribe("devices/#") == 1
        tasmota = await rabbit.connect(user, user, secret)
        assert await tasmota.subscribe(f"cmnd/{scope}/#") == 1
        tasmota.publish(f"tele/{scope}/SENSOR", '{"AM2301": {"Temperature": 20}}')
        assert await observer.next() == (f"tele/{scope}/SENSOR", b'{"AM2301": {"Temperature": 20}}')
        observer.publish(f"cmnd/{scope}/POWER1", "ON")
        assert (await tasmota.next())[0] == f"cmnd/{scope}/POWER1"

        forger = await rabbit.connect(f"{user}-forger", user, secret)
        forger.publish(f"tele/{other}/SENSOR", '{"forged": 1}')
        forger.publish(f"devices/{A1}/data", '{"forged": 1}')
        await asyncio.sleep(1.0)  # bounded: what RabbitMQ would have routed arrives by now
        while not observer.messages.empty():
            topic, _ = observer.messages.get_nowait()
            assert topic not in (f"tele/{other}/SENSOR", f"devices/{A1}/data")
        spy = await rabbit.connect(f"{user}-spy", user, secret)
        with contextlib.suppress(TimeoutError):
            assert await spy.subscribe(f"cmnd/{other}/#") == 0x80
        observer.publish(f"cmnd/{other}/POWER1", "ON")
        assert await _silent(spy)
    finally:
        if user in await rabbit.api.users():
            await rabbit.api.delete_user(user)

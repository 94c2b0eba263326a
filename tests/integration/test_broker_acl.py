"""Secure mode in the brokers: a device with valid credentials can't publish as or
subscribe to another device; bad, revoked and cross-device logins are refused;
provisioning with the fleet secret. Embedded amqtt and Mosquitto (generated files)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gmqtt
import orjson
import pytest
from gmqtt.mqtt.constants import MQTTv311
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from iotp.broker.embedded import EmbeddedBroker
from iotp.broker.mosquitto import MosquittoSync
from iotp.broker.provisioning import Provisioner
from iotp.db import migrate
from iotp.db.engine import make_engine
from iotp.netutil import free_port
from iotp.services import credentials as cred_service
from iotp.settings import Settings
from tests.support import MOSQUITTO, _wait_port, eventually, need

FLEET = "fleet-provisioning-secret-for-tests"


class Refused(Exception):
    pass


class Client:
    """A gmqtt client with credentials that records messages and SUBACK codes."""

    def __init__(
        self,
        url: str,
        client_id: str,
        username: str | None,
        password: str | None,
        will: Any = None,
        clean: bool = True,
    ) -> None:
        self.host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.port = int(port)
        self.client = gmqtt.Client(client_id, will_message=will, clean_session=clean)
        self.client.set_config({"reconnect_retries": 0, "reconnect_delay": 3600})  # never, here
        if username is not None:
            self.client.set_auth_credentials(username, password)
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.granted: asyncio.Queue[list[int]] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, mid, qos, props: self.granted.put_nowait(list(qos))
        self.client.on_disconnect = lambda c, packet, exc=None: self.disconnected.set()

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        self.messages.put_nowait((topic, payload))
        return 0

    async def connect(self) -> Client:
        try:
            await asyncio.wait_for(
                self.client.connect(self.host, self.port, version=MQTTv311, keepalive=30), 5
            )
        except (gmqtt.mqtt.handler.MQTTConnectError, OSError, TimeoutError) as exc:
            raise Refused(str(exc)) from exc
        # Some brokers accept the TCP connection and then close it on a bad CONNECT.
        if not self.client.is_connected:
            raise Refused("not connected")
        return self

    async def subscribe(self, topic: str) -> int:
        self.client.subscribe(topic, qos=1)
        codes = await asyncio.wait_for(self.granted.get(), 5)
        return codes[0]

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1)

    async def next(self, timeout: float = 5.0) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.disconnect()


@dataclass
class SecureBroker:
    kind: str
    url: str
    settings: Settings
    engine: AsyncEngine
    apply: Callable[[], Awaitable[Any]]  # make the broker see credential changes now
    clients: list[Client] = field(default_factory=list)

    async def connect(
        self, client_id: str, username: str | None, password: str | None, will: Any = None
    ) -> Client:
        client = Client(self.url, client_id, username, password, will)
        self.clients.append(client)
        return await client.connect()

    async def service(self) -> Client:
        s = self.settings
        return await self.connect(
            f"svc-{uuid.uuid4().hex[:6]}",
            s.mqtt_service_account("worker"),
            s.mqtt_service_password("worker"),
        )

    async def issue(self, device_id: str) -> str:
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            _, secret = await cred_service.issue(session, device_id=device_id)
            await session.commit()
        await self.apply()
        return secret

    async def revoke(self, device_id: str) -> None:
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            await cred_service.revoke(session, device_id=device_id)
            await session.commit()
        await self.apply()


def secure_settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'iotp.db'}",
        secure=True,
        secret_key="s" * 48,
        provisioning_secret=FLEET,
        credentials_poll_seconds=0.2,
        **extra,
    )


@contextlib.asynccontextmanager
async def embedded(tmp_path: Path, **extra: Any) -> AsyncIterator[SecureBroker]:
    settings = secure_settings(tmp_path, **extra)
    engine = make_engine(settings.effective_database_url)
    await migrate.upgrade(engine)
    before = asyncio.all_tasks()
    broker = EmbeddedBroker.for_settings(settings, engine, "127.0.0.1", free_port())
    await broker.start()
    assert broker.authority is not None
    sb = SecureBroker("embedded", broker.url, settings, engine, broker.authority.sync)
    try:
        yield sb
    finally:
        for c in sb.clients:
            await c.close()
        await broker.stop()
        await engine.dispose()
        # amqtt can drop a connection's StreamWriter without closing it: once the tasks
        # the broker and its clients started have ended, finalise it while the event loop
        # is still open (else: ResourceWarning in whichever test runs next).
        await eventually(lambda: not _started_since(before), what="the broker's tasks end")
        gc.collect()


def _started_since(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """The tasks started since ``before`` that still run, but for this one and the
    clients' reconnect attempts after the broker dropped them (an hour's delay here:
    the event loop cancels them when it closes)."""
    return [
        task
        for task in asyncio.all_tasks() - before - {asyncio.current_task()}
        if task.get_coro().__qualname__ != "Client.reconnect"
    ]


# `user root`: as root, Mosquitto would otherwise drop to `mosquitto`, which cannot read
# files in pytest's private tmp dirs (ignored when not started as root).
MOSQ_SECURE_CONF = """\
user root
listener {port} 127.0.0.1
allow_anonymous false
password_file {passwords}
acl_file {acl}
persistence false
log_dest none
"""


@contextlib.asynccontextmanager
async def mosquitto(tmp_path: Path, **extra: Any) -> AsyncIterator[SecureBroker]:
    need(os.path.exists(MOSQUITTO), "mosquitto binary")
    settings = secure_settings(tmp_path, **extra)
    engine = make_engine(settings.effective_database_url)
    await migrate.upgrade(engine)
    port = free_port()
    pid_file = tmp_path / "mosquitto.pid"
    sync = MosquittoSync(
        settings,
        engine,
        password_file=tmp_path / "passwd",
        acl_file=tmp_path / "acl",
        pid_file=pid_file,
    )
    await sync.sync()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        MOSQ_SECURE_CONF.format(port=port, passwords=sync.password_file, acl=sync.acl_file)
    )
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pid_file.write_text(str(proc.pid))
    try:
        _wait_port(port)
    except RuntimeError:
        proc.kill()
        proc.wait()
        await engine.dispose()
        raise

    url = f"mqtt://127.0.0.1:{port}"

    async def apply() -> None:
        if await sync.sync(reload=False):  # the files changed: Mosquitto must reload them
            await reload_and_wait()

    async def reload_and_wait() -> None:
        # SIGHUP is asynchronous and Mosquitto does not say when it has reloaded. A device
        # issued for the purpose is written into the same files as the changes: once it is
        # let in, a reload that read them has taken effect. It is forgotten again at once;
        # the files lose it without a reload, so Mosquitto knows it until its next one.
        probe = f"RELOAD-{uuid.uuid4().hex[:8]}"
        async with AsyncSession(engine, expire_on_commit=False) as session:
            _, secret = await cred_service.issue(session, device_id=probe)
            await session.commit()
        await sync.sync()

        async def let_in() -> bool:
            client = await Client(url, probe, probe, secret).connect()
            await client.close()
            return True

        await eventually(let_in, what="Mosquitto reloaded its files", retry_on=(Refused,))
        async with AsyncSession(engine) as session:
            await cred_service.delete(session, device_id=probe)
            await session.commit()
        await sync.sync(reload=False)

    sb = SecureBroker("mosquitto", url, settings, engine, apply)
    try:
        yield sb
    finally:
        for c in sb.clients:
            await c.close()
        proc.terminate()
        proc.wait(5)
        await engine.dispose()


BROKERS = {"embedded": embedded, "mosquitto": mosquitto}


@pytest.fixture(params=list(BROKERS))
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SecureBroker]:
    async with BROKERS[request.param](tmp_path) as b:
        yield b


async def test_device_cannot_publish_as_or_subscribe_to_another(broker: SecureBroker) -> None:
    secret_a = await broker.issue("A1")
    await broker.issue("B2")
    watcher = await broker.service()
    assert await watcher.subscribe("devices/#") in (0, 1)
    a = await broker.connect("A1", "A1", secret_a)

    # Subscribing to anything but its own commands is refused (SUBACK 0x80). Mosquitto's
    # acl_file grants the SUBACK and enforces the read rule on every delivery instead:
    # the end of this test shows nothing else arrives.
    for topic in (
        "devices/B2/commands",
        "devices/+/commands",
        "devices/#",
        "#",
        "devices/B2/data",
        "iotp/events/#",
    ):
        code = await a.subscribe(topic)
        assert code == 0x80 or broker.kind == "mosquitto", topic
    assert await a.subscribe("devices/A1/commands") in (0, 1)

    # Publishing as another device (or a command to itself) goes nowhere.
    a.publish("devices/B2/data", '{"forged": 1}')
    a.publish("devices/B2/status", "offline")
    a.publish("devices/A1/commands", '{"id": "x", "command": "reboot"}')
    a.publish("iotp/events/device_data/B2", "{}")
    a.publish("devices/A1/data", '{"temperature": 20}')
    topic, payload = await watcher.next()
    assert (topic, payload) == ("devices/A1/data", b'{"temperature": 20}')

    # Commands: each device receives only its own.
    watcher.publish("devices/B2/commands", '{"id": "b"}')
    watcher.publish("devices/B2/data", '{"t": 1}')
    watcher.publish("iotp/events/device_data/B2", "{}")
    watcher.publish("devices/A1/commands", '{"id": "a"}')
    assert await a.next() == ("devices/A1/commands", b'{"id": "a"}')
    await asyncio.sleep(0.2)  # bounded: another device's message, had it come, is here
    assert a.messages.empty()


async def test_bad_logins_are_refused(broker: SecureBroker) -> None:
    secret_a = await broker.issue("A1")
    await broker.issue("B2")
    attempts: list[tuple[str, str | None, str | None]] = [
        ("A1", None, None),  # anonymous
        ("A1", "A1", "wrong-secret"),
        ("A1", "A1", ""),
        ("Z9", "Z9", secret_a),  # unknown device
        ("A1", "iotp", "not-the-service-password"),
        ("A1", "provision", "not-the-fleet-secret"),
    ]
    if broker.kind == "embedded":
        # Mosquitto has no per-user client-id rule: see docs/security.md.
        attempts.append(("B2", "A1", secret_a))  # valid secret, another device's client id
        attempts.append(("B2", "provision", FLEET))  # provisioning as an approved device
    for client_id, user, password in attempts:
        with pytest.raises(Refused):
            await broker.connect(client_id, user, password)
    await broker.connect("A1", "A1", secret_a)


async def test_last_will_must_be_the_devices_own(broker: SecureBroker) -> None:
    secret_a = await broker.issue("A1")
    will = gmqtt.Message("devices/B2/status", "offline", qos=1, retain=True)
    if broker.kind == "embedded":
        with pytest.raises(Refused):
            await broker.connect("A1", "A1", secret_a, will=will)
    else:
        # Mosquitto accepts the connection but never publishes a forbidden will.
        watcher = await broker.service()
        await watcher.subscribe("devices/#")
        a = await broker.connect("A1", "A1", secret_a, will=will)
        a.client._connection._transport.close()  # die without DISCONNECT: will fires
        await asyncio.wait_for(a.disconnected.wait(), 5)
        await asyncio.sleep(0.5)  # bounded: a will the broker published would be here
        assert watcher.messages.empty()
        await a.client.disconnect()  # stop gmqtt's own reconnect attempts
    own = gmqtt.Message("devices/A1/status", "offline", qos=1, retain=True)
    await broker.connect("A1", "A1", secret_a, will=own)


async def test_revoked_device_is_disconnected_and_refused(broker: SecureBroker) -> None:
    secret_a = await broker.issue("A1")
    a = await broker.connect("A1", "A1", secret_a)
    await broker.revoke("A1")
    await asyncio.wait_for(a.disconnected.wait(), 5)
    with pytest.raises(Refused):
        await broker.connect("A1", "A1", secret_a)
    # Rotation: the old secret stops working, the new one works.
    new = await broker.issue("A1")
    with pytest.raises(Refused):
        await broker.connect("A1", "A1", secret_a)
    await broker.connect("A1", "A1", new)


async def test_provisioning_pending_then_approved(broker: SecureBroker) -> None:
    provisioner = Provisioner(broker.settings, broker.engine, broker.url)
    await provisioner.start()
    try:
        watcher = await broker.service()
        await watcher.subscribe("devices/#")
        prov = await broker.connect("C3", "provision", FLEET)
        prov.publish("devices/provision/data", '{"forged": 1}')  # %u would be "provision"
        prov.publish("devices/C3/data", '{"forged": 1}')
        assert await prov.subscribe("provision/C3/response") in (0, 1)
        code = await prov.subscribe("provision/D4/response")
        # Mosquitto: the provisioning account asks for any id (its client id is no proof
        # of one: on the platform's own broker it is always `provision`); answers carry a
        # status only. The embedded broker ties it to the client id.
        assert code == 0x80 or broker.kind == "mosquitto"
        prov.publish("provision/D4/request", '{"secret": "someone-elses-secret-1234"}')
        my_secret = "a-secret-the-device-made-up-123456"
        prov.publish("provision/C3/request", orjson.dumps({"secret": my_secret}))
        topic, payload = await prov.next()
        if topic == "provision/D4/response":
            assert broker.kind == "mosquitto"
            topic, payload = await prov.next()
        assert topic == "provision/C3/response"
        assert orjson.loads(payload) == {"status": "pending"}
        with pytest.raises(Refused):  # not before approval
            await broker.connect("C3", "C3", my_secret)
        async with AsyncSession(broker.engine) as session:
            pending = await cred_service.list_credentials(
                session, status=cred_service.CredentialStatus.PENDING
            )
            asked = ["C3", "D4"] if broker.kind == "mosquitto" else ["C3"]
            assert [c.device_id for c in pending] == asked
            await cred_service.approve(session, device_id="C3")
            await session.commit()
        await broker.apply()
        await prov.close()
        dev = await broker.connect("C3", "C3", my_secret)
        assert await dev.subscribe("devices/C3/commands") in (0, 1)
        dev.publish("devices/C3/data", '{"t": 1}')
        assert await watcher.next() == ("devices/C3/data", b'{"t": 1}')  # nothing forged first
        # Nobody can replace an approved device's secret through provisioning.
        other = await broker.connect("X5", "provision", FLEET)
        await other.subscribe("provision/X5/response")
        other.publish("provision/C3/request", '{"secret": "attacker-secret-1234567890"}')
        other.publish("provision/X5/request", '{"secret": "x5-secret-1234567890"}')
        assert orjson.loads((await other.next())[1]) == {"status": "pending"}
        await broker.apply()
        await dev.close()
        await broker.connect("C3", "C3", my_secret)
    finally:
        await provisioner.stop()


async def test_embedded_broker_polls_for_revocations(tmp_path: Path) -> None:
    async with embedded(tmp_path) as b:
        secret = await b.issue("A1")
        a = await b.connect("A1", "A1", secret)
        async with AsyncSession(b.engine) as session:  # no explicit apply(): the poll loop
            await cred_service.revoke(session, device_id="A1")
            await session.commit()
        await asyncio.wait_for(a.disconnected.wait(), 5)

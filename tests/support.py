"""Shared test helpers: real services (Mosquitto, PostgreSQL), a running platform stack,
and an MQTT client for publishing like a device."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import gmqtt
import httpx
import pytest
from gmqtt.mqtt.constants import MQTTv311
from sqlalchemy.ext.asyncio import AsyncEngine

from iotp.api.security import uvicorn_proxy, uvicorn_tls
from iotp.broker.embedded import EmbeddedBroker
from iotp.broker.supervisor import SupervisedMosquitto
from iotp.db import migrate
from iotp.db.engine import make_engine
from iotp.netutil import free_port
from iotp.runtime import Platform
from iotp.settings import Settings
from iotp.worker.service import Worker

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_DSN = os.environ.get("IOTP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def need(ok: bool, what: str) -> None:
    """A missing service skips locally but fails under CI=true."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required service unavailable in CI: {what}")
    pytest.skip(f"service unavailable: {what}")


# ---- Mosquitto --------------------------------------------------------------------


@dataclass
class MosquittoServer:
    port: int
    proc: subprocess.Popen[bytes]
    conf: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.proc = _spawn_mosquitto(self.conf)
        _wait_port(self.port)


MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence {persist}
persistence_location {dir}/
max_queued_messages 1000000
max_inflight_messages 0
set_tcp_nodelay true
max_keepalive 120
log_dest none
"""


def _spawn_mosquitto(conf: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _wait_port(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def start_mosquitto(persist: bool = False) -> MosquittoServer:
    need(os.path.exists(MOSQUITTO), "mosquitto binary")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="iotp-mosq-"))
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        MOSQUITTO_CONF.format(port=port, persist="true" if persist else "false", dir=workdir)
    )
    server = MosquittoServer(port, _spawn_mosquitto(conf), conf)
    try:
        _wait_port(port)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def mosquitto_server(persist: bool = False) -> Iterator[MosquittoServer]:
    """A plain Mosquitto of its own (open, on loopback), stopped on the way out."""
    server = start_mosquitto(persist)
    try:
        yield server
    finally:
        server.stop()


# ---- amqtt ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def amqtt_broker() -> AsyncIterator[EmbeddedBroker]:
    """The embedded amqtt broker, open, on loopback, in this process."""
    broker = EmbeddedBroker("127.0.0.1", free_port())
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


# ---- waiting for something to happen -----------------------------------------------


async def eventually(
    probe: Callable[[], Any],
    timeout: float = 15.0,
    what: str = "",
    *,
    interval: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """The one polling helper: call ``probe`` (sync or async) until it returns something
    truthy, and return that. An exception in ``retry_on`` (a process still starting)
    counts as not yet. Fails with ``what`` and the last value seen after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
            if inspect.isawaitable(last):
                last = await last
        except retry_on as exc:
            last = exc
        else:
            if last:
                return last
        if loop.time() >= deadline:
            raise AssertionError(
                f"not reached within {timeout}s{': ' + what if what else ''} (last: {last!r})"
            )
        await asyncio.sleep(interval)


# ---- PostgreSQL -------------------------------------------------------------------


async def create_pg_database() -> str:
    name = f"iotp_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        need(False, f"PostgreSQL at {PG_ADMIN_DSN} ({exc})")
        raise
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{name}"


async def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def migrate_database(url: str) -> None:
    """Brings the database at ``url`` (SQLite or PostgreSQL) to the current schema."""
    engine = make_engine(Settings(database_url=url).effective_database_url)
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def pg_database(*, migrated: bool = False) -> AsyncIterator[str]:
    """A PostgreSQL database of its own (its URL), dropped on the way out."""
    url = await create_pg_database()
    try:
        if migrated:
            await migrate_database(url)
        yield url
    finally:
        await drop_pg_database(url)


# ---- MQTT client for tests ---------------------------------------------------------


class MqttTestClient:
    """Publishes and receives like a device or an observer."""

    def __init__(
        self,
        url: str,
        client_id: str | None = None,
        will: Any = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.url = url
        self.client = gmqtt.Client(client_id or f"test-{uuid.uuid4().hex[:8]}", will_message=will)
        self.client.set_config({"reconnect_retries": 0})
        if credentials is not None:
            self.client.set_auth_credentials(*credentials)
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._subacks: dict[int, asyncio.Future[tuple[int, ...]]] = {}

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        self.messages.put_nowait((topic, payload))
        return 0

    def _on_subscribe(self, client: Any, mid: int, qos: tuple[int, ...], props: Any) -> None:
        future = self._subacks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(qos)

    async def connect(self) -> MqttTestClient:
        host, port = self.url.split("://", 1)[1].rsplit(":", 1)
        await self.client.connect(host, int(port), version=MQTTv311, keepalive=30)
        return self

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    async def subscribe(self, topic: str, qos: int = 1, timeout: float = 10.0) -> None:
        """Returns once the broker has acknowledged the subscription (SUBACK): every
        message published after that reaches this client."""
        mid = self.client.subscribe(topic, qos=qos)
        # The SUBACK is read by the event loop, so it cannot arrive before this line.
        future = self._subacks[mid] = asyncio.get_running_loop().create_future()
        granted = await asyncio.wait_for(future, timeout)
        if any(q >= 0x80 for q in granted):
            raise AssertionError(f"the broker refused the subscription to {topic}: {granted}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.disconnect()


# ---- A running platform -----------------------------------------------------------


# How a stack's devices authenticate: every stack says it (run_stack's ``mode``).
OPEN = "open"  # open mode on purpose: anyone may connect to the device listener
PROVISIONED = "provisioned"  # secure mode: devices need credentials (issued or provisioned)
# The platform's default: Debian's Mosquitto supervised by the platform (as `iotp serve`).
SUPERVISED_KINDS = ("embedded-sqlite", "mosquitto-postgres")
# The kinds as fixture parameters, marked with the real services each one needs.
SUPERVISED_STACKS = [
    pytest.param("embedded-sqlite", marks=pytest.mark.mosquitto),
    pytest.param("mosquitto-postgres", marks=[pytest.mark.mosquitto, pytest.mark.postgres]),
]
# Database kinds as fixture parameters: "postgres" needs PostgreSQL.
DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
AMQTT_KIND = "amqtt-sqlite"  # the fallback where no mosquitto binary exists
TEST_SECRET_KEY = "test-secret-key-" + "k" * 40


@dataclass
class Stack:
    """Broker + worker + API on real parts, as `iotp serve` composes them."""

    kind: str
    settings: Settings
    mqtt_url: str  # where devices connect
    api_url: str
    worker: Worker
    http: httpx.AsyncClient
    cleanup: list[Callable[[], Any]] = field(default_factory=list)
    # security: the admin's access token; Stack.http sends it (see login_admin below)
    token: str = ""
    broker: SupervisedMosquitto | EmbeddedBroker | None = None
    # Where the platform's own processes connect (their own listener on Mosquitto).
    platform_url: str = ""
    # Every worker of the share group (run_stack's ``workers``); the first is ``worker``.
    workers: list[Worker] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        """The WebSocket URL, with the token browsers must pass as a query parameter."""
        return self.api_url.replace("http", "ws", 1) + f"/api/ws?token={self.token}"

    async def device(
        self, client_id: str | None = None, credentials: tuple[str, str] | None = None
    ) -> MqttTestClient:
        client = await MqttTestClient(self.mqtt_url, client_id, credentials=credentials).connect()
        self.cleanup.append(client.close)
        return client

    async def wait_for(
        self, probe: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
    ) -> Any:
        """:func:`eventually`, with this module's usual timeout."""
        return await eventually(probe, timeout=timeout, interval=interval)

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()


@contextlib.asynccontextmanager
async def run_stack(
    kind: str,
    tmp_path: Path,
    *,
    mode: str,
    workers: int = 1,
    ca_file: Path | None = None,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """The platform on real parts. ``kind``: "embedded-sqlite" (the supervised Mosquitto
    + SQLite, what `iotp serve` runs), "mosquitto-postgres" (supervised Mosquitto +
    PostgreSQL) or "amqtt-sqlite" (the amqtt fallback). ``mode``: OPEN or PROVISIONED
    (the broker enforces device credentials and topic ACLs; a provisioner runs).
    ``workers`` > 1 adds workers as `iotp worker` runs them beside `iotp serve` (give
    them a ``mqtt_share_group``). ``overrides`` are settings; with ``tls_cert_file`` the
    API serves HTTPS, and ``Stack.http`` trusts the CA in ``ca_file``."""
    if mode not in (OPEN, PROVISIONED):
        raise ValueError(f"mode must be OPEN or PROVISIONED, not {mode!r}")
    if kind not in (*SUPERVISED_KINDS, AMQTT_KIND):
        raise ValueError(kind)
    secure = mode == PROVISIONED
    pg_url: str | None = None
    if kind == "mosquitto-postgres":
        pg_url = await create_pg_database()
        db_url = pg_url
    else:
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'iotp.db'}"
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": db_url,
        "mqtt_client_id": f"iotp.worker.{uuid.uuid4().hex[:6]}",
        "batch_max_delay_ms": 20,
        "stats_flush_seconds": 0.2,
        "offline_min_seconds": 1.0,
        "reject_log_interval_seconds": 0,
        "secret_key": TEST_SECRET_KEY,
        "secure": secure,
    }
    values["admin_password"] = TEST_ADMIN_PASSWORD  # security: API auth is always on
    values.update(overrides)
    settings = Settings(**values)
    if kind != AMQTT_KIND:
        need(os.path.exists(MOSQUITTO), "mosquitto binary")

    def make_broker(engine: AsyncEngine | None) -> SupervisedMosquitto | EmbeddedBroker:
        if kind == AMQTT_KIND:
            return EmbeddedBroker.for_settings(settings, engine, "127.0.0.1", free_port())
        assert engine is not None  # the stack's platform always has its database
        return SupervisedMosquitto(
            settings, engine, host="127.0.0.1", port=free_port(), binary=MOSQUITTO
        )

    port = free_port()
    tls = uvicorn_tls(settings)  # HTTPS when a certificate is configured, as `iotp serve`
    options = {**tls, **uvicorn_proxy(settings)}
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        verify = ssl.create_default_context(cafile=str(ca_file))
    try:
        async with (
            Platform(
                settings, broker=make_broker, api_port=port, uvicorn_options=options
            ) as platform,
            contextlib.AsyncExitStack() as more,
        ):
            all_workers = [platform.worker]
            for i in range(1, workers):
                other = settings.model_copy(
                    update={"mqtt_client_id": f"{settings.mqtt_client_id}.{i}"}
                )
                worker = Platform(other, broker=None, mqtt_url=platform.platform_url, api_port=None)
                all_workers.append((await more.enter_async_context(worker)).worker)
            api_url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
            http = httpx.AsyncClient(base_url=api_url, timeout=10, verify=verify)
            stack = Stack(
                kind,
                settings,
                platform.device_url,
                api_url,
                platform.worker,
                http,
                [],
                "",
                platform.broker,
                platform.platform_url,
                all_workers,
            )
            try:
                # The API's own MQTT link must be up before tests rely on live events.
                await stack.wait_for(lambda: _health_ok(http))
                await login_admin(stack)  # security
                yield stack
            finally:
                for fn in reversed(stack.cleanup):
                    with contextlib.suppress(Exception):
                        result = fn()
                        if asyncio.iscoroutine(result):
                            await result
                await http.aclose()
    finally:
        if pg_url is not None:
            await drop_pg_database(pg_url)


@contextlib.asynccontextmanager
async def run_worker(
    data_dir: Path, database_url: str, mqtt_url: str, **overrides: Any
) -> AsyncIterator[Worker]:
    """One worker as `iotp worker` runs it (the same `Platform`: no broker, no API) in
    this process, with its own engine (connection pool) and MQTT link, on a database and
    an open broker that already run. ``overrides`` are settings."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "mqtt_client_id": f"iotp.worker.{uuid.uuid4().hex[:6]}",
        "secret_key": TEST_SECRET_KEY,
        "secure": False,
    }
    settings = Settings(**{**values, **overrides})
    async with Platform(settings, broker=None, mqtt_url=mqtt_url, api_port=None) as platform:
        yield platform.worker


async def _health_ok(http: httpx.AsyncClient) -> bool:
    response = await http.get("/api/health")
    return response.status_code == 200


# ---- security: every API route needs a token --------------------------------------

TEST_ADMIN_PASSWORD = "admin-password-for-tests"


async def login(http: httpx.AsyncClient, username: str, password: str) -> str:
    response = await http.post("/api/auth/token", data={"username": username, "password": password})
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


async def login_admin(stack: Stack) -> None:
    """Sign Stack.http in as the first-start admin, so tests call the API as before."""
    stack.token = await login(stack.http, "admin", TEST_ADMIN_PASSWORD)
    stack.http.headers["Authorization"] = f"Bearer {stack.token}"


# ---- RabbitMQ (docs/operations.md#rabbitmq) ---------------------------------------

ROOT = Path(__file__).resolve().parents[1]
RABBITMQ_HOST = "127.0.0.1"
RABBITMQ_AMQP_PORT = 5672
RABBITMQ_MQTT_PORT = int(os.environ.get("IOTP_RABBITMQ_MQTT_PORT", "1885"))
RABBITMQ_MANAGEMENT_PORT = int(os.environ.get("IOTP_RABBITMQ_MANAGEMENT_PORT", "15672"))
RABBITMQ_ADMIN = ("guest", "guest")  # loopback only, as RabbitMQ allows it


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((RABBITMQ_HOST, port)) == 0


def ensure_rabbitmq() -> None:
    """RabbitMQ with its MQTT (on RABBITMQ_MQTT_PORT, beside Mosquitto's 1883) and
    management plugins: started and enabled if needed by .ci/rabbitmq, the script CI runs.
    Missing: skip locally, fail under CI=true."""
    ports = (RABBITMQ_AMQP_PORT, RABBITMQ_MQTT_PORT, RABBITMQ_MANAGEMENT_PORT)
    if all(_port_open(p) for p in ports):
        return
    need(shutil.which("rabbitmq-server") is not None, "rabbitmq-server binary")
    try:
        proc = subprocess.run(
            [str(ROOT / ".ci" / "rabbitmq")], capture_output=True, text=True, timeout=240
        )
        detail = proc.stderr.strip()[-500:]
        ok = proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, detail = False, str(exc)
    need(ok and all(_port_open(p) for p in ports), f"RabbitMQ with MQTT and management ({detail})")


@dataclass
class RabbitVhost:
    """A vhost of its own for one test (module): its queues, its amq.topic, its MQTT
    retained messages; nothing collides with other runs on the same RabbitMQ."""

    name: str
    user: str = RABBITMQ_ADMIN[0]
    password: str = RABBITMQ_ADMIN[1]

    @property
    def amqp_url(self) -> str:
        from urllib.parse import quote

        return (
            f"amqp://{self.user}:{self.password}@{RABBITMQ_HOST}:{RABBITMQ_AMQP_PORT}/"
            f"{quote(self.name, safe='')}"
        )

    def mqtt_url(self, user: str | None = None, password: str | None = None) -> str:
        """RabbitMQ's MQTT plugin picks the vhost from a ``vhost:user`` username."""
        from urllib.parse import quote

        login = quote(f"{self.name}:{user or self.user}", safe="")
        secret = quote(password if user else self.password, safe="")
        return f"mqtt://{login}:{secret}@{RABBITMQ_HOST}:{RABBITMQ_MQTT_PORT}"

    @property
    def management_url(self) -> str:
        user, password = RABBITMQ_ADMIN
        return f"http://{user}:{password}@{RABBITMQ_HOST}:{RABBITMQ_MANAGEMENT_PORT}"

    async def device(
        self, client_id: str, user: str | None = None, password: str | None = None
    ) -> MqttTestClient:
        """An MQTT client (QoS 1 publisher) in this vhost, as ``user`` (default guest)."""
        client = MqttTestClient(
            f"mqtt://{RABBITMQ_HOST}:{RABBITMQ_MQTT_PORT}", client_id, will=None
        )
        client.client.set_auth_credentials(
            f"{self.name}:{user or self.user}", password or self.password
        )
        return await client.connect()


def _management() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://{RABBITMQ_HOST}:{RABBITMQ_MANAGEMENT_PORT}/api",
        auth=RABBITMQ_ADMIN,
        timeout=30,
    )


async def create_rabbitmq_vhost(prefix: str = "iotp_test") -> RabbitVhost:
    await asyncio.to_thread(ensure_rabbitmq)
    vhost = RabbitVhost(f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    from urllib.parse import quote

    name = quote(vhost.name, safe="")
    async with _management() as http:
        (await http.put(f"/vhosts/{name}")).raise_for_status()
        everything = {"configure": ".*", "write": ".*", "read": ".*"}
        (await http.put(f"/permissions/{name}/{vhost.user}", json=everything)).raise_for_status()
    return vhost


async def delete_rabbitmq_vhost(vhost: RabbitVhost) -> None:
    """Also closes the vhost's connections and deletes its queues."""
    from urllib.parse import quote

    async with _management() as http:
        await http.delete(f"/vhosts/{quote(vhost.name, safe='')}")


@contextlib.asynccontextmanager
async def rabbitmq_vhost(prefix: str = "iotp_test") -> AsyncIterator[RabbitVhost]:
    """A RabbitMQ vhost of its own, deleted (with its queues) on the way out."""
    vhost = await create_rabbitmq_vhost(prefix)
    try:
        yield vhost
    finally:
        await delete_rabbitmq_vhost(vhost)


async def rabbitmq_queue(vhost: RabbitVhost, queue: str) -> dict[str, Any]:
    """The management API's view of a queue (messages, consumers...)."""
    from urllib.parse import quote

    async with _management() as http:
        response = await http.get(f"/queues/{quote(vhost.name, safe='')}/{quote(queue, safe='')}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

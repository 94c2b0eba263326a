"""Process composition: `iotp serve` (everything in one process), `iotp worker`, `iotp api`,
`iotp broker`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from iotp.api.app import create_app, web_dist
from iotp.api.security import security_banner, uvicorn_proxy, uvicorn_tls
from iotp.broker.embedded import EmbeddedBroker
from iotp.broker.provisioning import Provisioner, publish_answer, start_provisioner
from iotp.broker.supervisor import SupervisedMosquitto, find_mosquitto
from iotp.db import migrate
from iotp.db.engine import make_engine
from iotp.errors import ConfigurationError
from iotp.mqtt import accepts_anonymous
from iotp.netutil import choose_port
from iotp.services import credentials as cred_service
from iotp.services.auth import FLEET_SECRET_FILE, ensure_secrets
from iotp.services.credentials import CredentialStatus
from iotp.settings import MqttUrl, Settings
from iotp.worker.service import Worker

log = logging.getLogger(__name__)

DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"  # `iotp worker` / `iotp api` without IOTP_MQTT_URL


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    port_explicit: bool = False
    mqtt_host: str = "0.0.0.0"
    mqtt_port: int = 1883
    mqtt_port_explicit: bool = False
    demo: int = 0
    demo_interval: float = 2.0


async def prepare_database(settings: Settings) -> AsyncEngine:
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    await migrate.upgrade(engine)
    return engine


def _install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


BANNER_WIDTH = 96  # the rule's width; longer lines (commands to copy) run past it


def _banner(lines: list[str]) -> None:
    width = min(max(len(line) for line in lines), BANNER_WIDTH) + 4
    print("\n" + "=" * width)
    for line in lines:
        print(f"  {line}")
    print("=" * width + "\n", flush=True)


Broker = SupervisedMosquitto | EmbeddedBroker
# Builds the platform's own broker once the database is ready (it reads credentials);
# None when the platform runs without a database (`iotp broker` in open mode).
BrokerFactory = Callable[[AsyncEngine | None], Broker]
API_START_POLL_SECONDS = 0.02


class Platform:
    """The platform in one process: database (unless ``database`` is False), broker
    (unless ``mqtt_url`` names an external one), worker and provisioner (secure mode;
    unless ``worker`` is False) and API (unless ``api_port`` is None), started in that
    order and stopped in reverse. Each part is pushed on an AsyncExitStack as soon as it
    has started, so a part that fails to start stops everything before it. `iotp serve`,
    `iotp worker`, `iotp api`, `iotp broker` and the test stacks use it."""

    def __init__(
        self,
        settings: Settings,
        *,
        broker: BrokerFactory | None,
        mqtt_url: str | None = None,
        api_host: str = "127.0.0.1",
        api_port: int | None,
        worker: bool = True,
        database: bool = True,
        stop: asyncio.Event | None = None,
        uvicorn_options: dict[str, Any] | None = None,
    ) -> None:
        if (broker is None) == (mqtt_url is None):
            raise ValueError("either a broker of the platform's own or an mqtt_url")
        if not database and (worker or api_port is not None):
            raise ValueError("the worker and the API need the database")
        self.settings = settings
        self._make_broker = broker
        self._mqtt_url = mqtt_url
        self.api_host = api_host
        self.api_port = api_port
        self._run_worker = worker
        self._database = database
        self.stop_event = stop if stop is not None else asyncio.Event()
        self._uvicorn_options = uvicorn_options or {}
        self._stack = contextlib.AsyncExitStack()
        self.engine: AsyncEngine  # set when the platform has a database
        self.broker: Broker | None = None
        self.device_url = ""  # where devices connect
        self.platform_url = ""  # where the platform's own processes connect
        self.worker: Worker  # set when the platform runs a worker
        self.provisioner: Provisioner | None = None
        self.server: uvicorn.Server  # set when the platform runs an API

    async def __aenter__(self) -> Platform:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        engine: AsyncEngine | None = None
        if self._database:
            engine = self.engine = await prepare_database(self.settings)
            self._stack.push_async_callback(engine.dispose)
        if self._make_broker is not None:
            broker = self._make_broker(engine)
            await broker.start()
            self._stack.push_async_callback(broker.stop)
            self.broker = broker
            self.device_url, self.platform_url = broker.url, platform_url(broker)
        else:
            assert self._mqtt_url is not None
            self.device_url = self.platform_url = self._mqtt_url
        if self._run_worker:
            await self._start_worker()
        if self.api_port is not None:
            await self._start_api(self.api_port)

    async def _start_worker(self) -> None:
        settings = self.settings
        if settings.secure:
            await refuse_anonymous_broker(self.device_url)
        self.worker = Worker(settings, self.engine, self.platform_url)
        self._stack.push_async_callback(self.worker.stop)
        await self.worker.start(self.stop_event)
        self.provisioner = await start_provisioner(
            settings, self.engine, self.platform_url, self.stop_event
        )
        if self.provisioner is not None:  # security
            self._stack.push_async_callback(self.provisioner.stop)

    async def _start_api(self, port: int) -> None:
        app = create_app(
            self.settings,
            engine=self.engine,
            mqtt_default=self.platform_url,
            # Where devices connect: the own broker's device listener; on an external
            # broker IOTP_DEVICE_MQTT_URL when set, else the URL the platform connects to.
            device_mqtt_url=self.device_url if self.broker is not None else "",
        )
        config = uvicorn.Config(
            app,
            host=self.api_host,
            port=port,
            log_level="warning",
            lifespan="on",
            ws="websockets-sansio",
            **self._uvicorn_options,
        )
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None
        api_task = asyncio.create_task(self.server.serve(), name="api")

        async def stop_api() -> None:
            self.server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await api_task

        self._stack.push_async_callback(stop_api)
        while not self.server.started and not api_task.done():  # noqa: ASYNC110 - no event
            await asyncio.sleep(API_START_POLL_SECONDS)
        if api_task.done():
            await api_task  # re-raises the startup error
            raise ConfigurationError(f"the API did not start on {self.api_host}:{port}")


def settle_heap() -> None:
    """Once a process has started: what it built to start (modules, the schema, the app's
    routes) stays for its life, so the collector's full passes stop walking it. Those
    passes held requests up: listing 1,000 devices had a p95 of 128-148 ms against a p50
    of 30 ms, and 58 ms against 52 ms after (bench/history.py)."""
    gc.collect()
    gc.freeze()


async def serve(settings: Settings, opts: ServeOptions) -> None:
    """Broker (unless IOTP_MQTT_URL) + worker + API + dashboard in one process."""
    notes: list[str] = []
    api_port, moved = choose_port(opts.host, opts.port, explicit=opts.port_explicit, what="HTTP")
    if moved:
        notes.append(f"!! HTTP port {opts.port} is taken: using {api_port} instead")
    generated = ensure_secrets(settings)
    make_broker: BrokerFactory | None = None
    if not settings.mqtt_url:
        mqtt_port, moved = choose_port(
            opts.mqtt_host, opts.mqtt_port, explicit=opts.mqtt_port_explicit, what="MQTT"
        )
        if moved:
            notes.append(
                f"!! MQTT port {opts.mqtt_port} is taken (another broker?): using {mqtt_port}"
            )

        def make_broker(engine: AsyncEngine | None) -> Broker:
            return own_broker(settings, engine, opts.mqtt_host, mqtt_port)

    stop = asyncio.Event()
    _install_stop_signals(stop)
    platform = Platform(
        settings,
        broker=make_broker,
        mqtt_url=settings.mqtt_url or None,
        api_host=opts.host,
        api_port=api_port,
        stop=stop,
        uvicorn_options={
            **uvicorn_tls(settings),  # security: HTTPS when a certificate is configured
            **uvicorn_proxy(settings),
        },
    )
    async with platform:
        settle_heap()
        engine, broker, device_url = platform.engine, platform.broker, platform.device_url
        sim_task: asyncio.Task[Any] | None = None
        if opts.demo > 0:
            demo = _run_demo(settings, engine, platform.provisioner, device_url, opts, stop)
            sim_task = asyncio.create_task(demo, name="demo")
        url_host = "127.0.0.1" if opts.host in ("0.0.0.0", "") else opts.host
        scheme = "https" if uvicorn_tls(settings) else "http"  # security
        web = f"{scheme}://{url_host}:{api_port}/" + (
            "" if web_dist() else "  (dashboard not built)"
        )
        lines = [
            "IoT Platform is running",
            f"Dashboard:  {web}",
            f"API docs:   {scheme}://{url_host}:{api_port}/docs",
            f"MQTT:       {device_url}" + broker_note(broker),
            f"Database:   {engine.url.render_as_string(hide_password=True)}",
        ]
        lines.extend(security_banner(settings, broker))  # security
        lines.extend(mode_lines(settings, device_url, opts.mqtt_host))
        if FLEET_SECRET_FILE in generated:
            fleet = settings.provisioning_secret.get_secret_value()
            lines.append(f"Fleet:      {fleet}  (the fleet secret: shown once here; admins")
            lines.append("            find it on the dashboard's Credentials page)")
        if opts.demo:
            lines.append(f"Demo:       {opts.demo} simulated devices")
        lines.extend(_try_lines(settings, device_url, f"{scheme}://{url_host}:{api_port}"))
        _banner(notes + lines)

        await stop.wait()
        log.info("shutting down")
        if sim_task is not None:
            sim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sim_task


def own_broker(
    settings: Settings, engine: AsyncEngine | None, host: str, port: int
) -> SupervisedMosquitto | EmbeddedBroker:
    """Debian's Mosquitto, supervised; amqtt only where no mosquitto binary exists."""
    binary = find_mosquitto()
    if binary is None:
        log.warning("no mosquitto binary: falling back to the embedded amqtt broker")
        return EmbeddedBroker.for_settings(settings, engine, host, port)
    if engine is None:  # it writes its password and ACL files from the database
        raise ConfigurationError("the supervised Mosquitto needs the database")
    return SupervisedMosquitto(
        settings,
        engine,
        host=host,
        port=port,
        binary=binary,
        platform_port=settings.mqtt_platform_port,
    )


def platform_url(broker: SupervisedMosquitto | EmbeddedBroker) -> str:
    """Where the platform's own processes connect to their broker."""
    return broker.platform_url if isinstance(broker, SupervisedMosquitto) else broker.url


def broker_note(broker: SupervisedMosquitto | EmbeddedBroker | None) -> str:
    if broker is None:
        return ""
    if isinstance(broker, SupervisedMosquitto):
        return f"  (Mosquitto, supervised; config in {broker.workdir})"
    return "  (amqtt FALLBACK: no mosquitto binary found; `apt install mosquitto` for the default)"


async def refuse_anonymous_broker(url: str) -> None:
    """Secure mode on a broker that lets anyone in would be a lie: refuse to run."""
    if not await accepts_anonymous(MqttUrl(url)):
        return
    raise ConfigurationError(
        f"secure mode, but the broker at {url} accepts an anonymous CONNECT: configure it to"
        " refuse anonymous clients (allow_anonymous false) or start with --open"
    )


def mode_lines(settings: Settings, device_url: str, mqtt_host: str) -> list[str]:
    if settings.secure:
        joining = (
            ["new devices provision with the fleet secret and are approved at once"]
            if settings.auto_approve
            else [
                "new devices provision with the fleet secret; an admin approves each",
                "one, or opens a pairing window: iotp pairing open --minutes 10",
            ]
        )
        lines = ["SECURE: anonymous MQTT is refused; devices need their own credentials"]
        return [f"Security:   {lines[0]}", *(f"            {line}" for line in joining)]
    local = mqtt_host in ("127.0.0.1", "localhost", "::1")
    who = "anyone on this machine" if local else f"ANYONE WHO CAN REACH {mqtt_host}"
    return [
        "!! OPEN MODE (--open / IOTP_OPEN=true): MQTT without any authentication.",
        f"!! {who} can connect to {device_url}, read every",
        "!! device's data, command any device, change its broker or firmware URL.",
    ]


EXAMPLE_DEVICE = "A4CF12B3C4D5"


def _try_lines(settings: Settings, mqtt_url: str, api_url: str) -> list[str]:
    """The banner's "Try:" hint: publish as a device. In secure mode a device needs
    its own credentials: the hint gets them from the API first."""
    port = mqtt_url.rsplit(":", 1)[1]
    data = f"-t devices/{EXAMPLE_DEVICE}/data -m '{{\"temperature\": 21.5}}'"
    if not settings.secure:
        return [f"Try:        mosquitto_pub -p {port} -q 1 {data}"]
    field = "python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])'"
    return [
        "Try:        # an admin issues a device's credentials (IOTP_ADMIN_PASSWORD=the admin's"
        " password), then it publishes",
        f'            TOKEN=$(curl -s -d username=admin -d password="$IOTP_ADMIN_PASSWORD" '
        f"{api_url}/api/auth/token | {field} access_token)",
        f'            PW=$(curl -s -X POST -H "Authorization: Bearer $TOKEN" '
        f"{api_url}/api/credentials/{EXAMPLE_DEVICE} | {field} password)",
        # The broker takes credential changes up within IOTP_CREDENTIALS_POLL_SECONDS.
        f"            sleep {math.ceil(settings.credentials_poll_seconds) + 1}"
        "  # the broker takes new credentials up within a second",
        f"            mosquitto_pub -p {port} -q 1 -i {EXAMPLE_DEVICE} -u {EXAMPLE_DEVICE} "
        f'-P "$PW" {data}',
    ]


DEMO_CONNECT_RATE = 4.0
DEMO_SEED = 1
DEMO_APPROVE_POLL_S = 0.5


async def _run_demo(
    settings: Settings,
    engine: AsyncEngine,
    provisioner: Provisioner | None,
    mqtt_url: str,
    opts: ServeOptions,
    stop: asyncio.Event,
) -> None:
    try:
        from iotp.simulator import node_ids, run_simulation
    except ImportError:
        log.warning("simulator not available; --demo ignored")
        return
    # Secure mode: the demo devices provision themselves with the fleet secret and the
    # demo approves them (only them: real devices still wait for an admin). Without a
    # fleet secret it issues their credentials. Their credentials are kept in
    # data_dir/demo-devices, so a restart reconnects them as themselves.
    secure: dict[str, Any] = {}
    approver: asyncio.Task[None] | None = None
    if settings.secure:
        ids = node_ids(opts.demo, seed=DEMO_SEED)
        secure["state_dir"] = settings.data_dir / "demo-devices"
        fleet = settings.provisioning_secret.get_secret_value()
        if fleet:
            secure["fleet_secret"] = fleet
            if not settings.auto_approve and provisioner is not None:
                approver = asyncio.create_task(
                    _approve_demo_devices(engine, provisioner, set(ids), stop), name="demo-approve"
                )
        else:
            secure["credentials"] = await _issue_demo_credentials(engine, ids)
    # A few connections a second: amqtt 0.12 can fail a session when several clients
    # connect and subscribe at the same instant ("dictionary changed size").
    try:
        await run_simulation(
            devices=opts.demo,
            broker_url=mqtt_url,
            interval=opts.demo_interval,
            seed=DEMO_SEED,
            stop=stop,
            connect_rate=DEMO_CONNECT_RATE,
            **secure,
        )
    finally:
        if approver is not None:
            approver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await approver


async def _approve_demo_devices(
    engine: AsyncEngine, provisioner: Provisioner, ids: set[str], stop: asyncio.Event
) -> None:
    """Approves the demo's own devices when they ask (as an admin would)."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    while not stop.is_set():
        try:
            async with sessions.begin() as session:
                pending = await cred_service.list_credentials(
                    session, status=CredentialStatus.PENDING
                )
                approved = [c.device_id for c in pending if c.device_id in ids]
                for device_id in approved:
                    await cred_service.approve(session, device_id=device_id)
            for device_id in approved:
                log.info("demo: approved %s", device_id)
                publish_answer(provisioner.link, device_id, CredentialStatus.APPROVED)
        except Exception as exc:  # noqa: BLE001 - the demo must not end the platform
            log.warning("demo: approving devices failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), DEMO_APPROVE_POLL_S)


async def _issue_demo_credentials(engine: AsyncEngine, ids: list[str]) -> dict[str, str]:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    issued: dict[str, str] = {}
    async with sessions.begin() as session:
        for device_id in ids:
            _, issued[device_id] = await cred_service.issue(session, device_id=device_id)
    return issued


async def run_worker(settings: Settings) -> None:
    """The worker alone (and the provisioner, in secure mode) on an external broker."""
    ensure_secrets(settings)
    stop = asyncio.Event()
    _install_stop_signals(stop)
    platform = Platform(
        settings,
        broker=None,
        # The worker connects to IOTP_MQTT_URL when set (Settings.mqtt), else this.
        mqtt_url=settings.mqtt_url or DEFAULT_MQTT_URL,
        api_port=None,
        stop=stop,
    )
    try:
        async with platform:
            settle_heap()
            await stop.wait()
    except asyncio.CancelledError:
        # Stopped while still connecting: the platform has stopped what it started.
        if not stop.is_set():
            raise


async def run_api(settings: Settings, host: str, port: int) -> None:
    """The API alone (REST, WebSocket, dashboard) on an external broker."""
    ensure_secrets(settings)
    stop = asyncio.Event()
    _install_stop_signals(stop)
    tls = uvicorn_tls(settings)  # security: HTTPS when a certificate is configured
    platform = Platform(
        settings,
        broker=None,
        # The API connects to IOTP_MQTT_URL when set (Settings.mqtt), else this.
        mqtt_url=settings.mqtt_url or DEFAULT_MQTT_URL,
        api_host=host,
        api_port=port,
        worker=False,
        stop=stop,
        uvicorn_options={**tls, **uvicorn_proxy(settings)},
    )
    async with platform:
        settle_heap()
        scheme = "https" if tls else "http"
        print(f"IoT Platform API on {scheme}://{host}:{port}/ (docs at /docs)", flush=True)
        await stop.wait()


async def run_broker(host: str, port: int, settings: Settings) -> None:
    """The embedded amqtt broker alone. In secure mode it reads device credentials from
    the database, which it then opens (and migrates) first; in open mode it has none."""
    ensure_secrets(settings)
    stop = asyncio.Event()
    _install_stop_signals(stop)
    platform = Platform(
        settings,
        broker=lambda engine: EmbeddedBroker.for_settings(settings, engine, host, port),
        api_port=None,
        worker=False,
        database=settings.secure,  # security: device credentials
        stop=stop,
    )
    async with platform:
        assert platform.broker is not None
        print(f"embedded MQTT broker on {platform.broker.url}", flush=True)
        await stop.wait()

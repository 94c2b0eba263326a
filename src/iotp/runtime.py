"""Process composition: `iotp serve` (everything in one process), `iotp worker`, `iotp api`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import Any

import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from iotp.api.app import create_app, web_dist
from iotp.api.security import security_banner, uvicorn_tls
from iotp.broker.embedded import EmbeddedBroker
from iotp.broker.provisioning import start_provisioner
from iotp.db import migrate
from iotp.db.engine import make_engine
from iotp.netutil import choose_port
from iotp.settings import Settings
from iotp.worker.service import Worker

log = logging.getLogger(__name__)


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


def _banner(lines: list[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("\n" + "=" * width)
    for line in lines:
        print(f"  {line}")
    print("=" * width + "\n", flush=True)


async def serve(settings: Settings, opts: ServeOptions) -> None:
    """Broker (unless IOTP_MQTT_URL) + worker + API + dashboard in one process."""
    notes: list[str] = []
    api_port, moved = choose_port(opts.host, opts.port, explicit=opts.port_explicit, what="HTTP")
    if moved:
        notes.append(f"!! HTTP port {opts.port} is taken: using {api_port} instead")
    engine = await prepare_database(settings)
    broker: EmbeddedBroker | None = None
    if settings.mqtt_url:
        mqtt_default = settings.mqtt_url
    else:
        mqtt_port, moved = choose_port(
            opts.mqtt_host, opts.mqtt_port, explicit=opts.mqtt_port_explicit, what="MQTT"
        )
        if moved:
            notes.append(
                f"!! MQTT port {opts.mqtt_port} is taken (another broker?): using {mqtt_port}"
            )
        broker = EmbeddedBroker.for_settings(settings, engine, opts.mqtt_host, mqtt_port)
        await broker.start()
        mqtt_default = broker.url

    stop = asyncio.Event()
    worker = Worker(settings, engine, mqtt_default)
    await worker.start(stop)
    provisioner = await start_provisioner(settings, engine, mqtt_default)  # security
    app = create_app(settings, engine=engine, mqtt_default=mqtt_default)
    config = uvicorn.Config(
        app,
        host=opts.host,
        port=api_port,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
        **uvicorn_tls(settings),  # security: HTTPS when a certificate is configured
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None
    _install_stop_signals(stop)
    api_task = asyncio.create_task(server.serve(), name="api")

    sim_task: asyncio.Task[Any] | None = None
    if opts.demo > 0:
        sim_task = asyncio.create_task(_run_demo(mqtt_default, opts, stop), name="demo")

    while not server.started and not api_task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.05)
    if api_task.done():
        await api_task  # re-raises the startup error
    url_host = "127.0.0.1" if opts.host in ("0.0.0.0", "") else opts.host
    scheme = "https" if uvicorn_tls(settings) else "http"  # security
    web = f"{scheme}://{url_host}:{api_port}/" + ("" if web_dist() else "  (dashboard not built)")
    lines = [
        "IoT Platform is running",
        f"Dashboard:  {web}",
        f"API docs:   {scheme}://{url_host}:{api_port}/docs",
        f"MQTT:       {mqtt_default}" + ("  (embedded broker)" if broker else ""),
        f"Database:   {engine.url.render_as_string(hide_password=True)}",
    ]
    lines.extend(security_banner(settings, broker))  # security
    if opts.demo:
        lines.append(f"Demo:       {opts.demo} simulated devices")
    lines.append(
        f"Try:        mosquitto_pub -p {mqtt_default.rsplit(':', 1)[1]} "
        "-t devices/A4CF12B3C4D5/data -m '{\"temperature\": 21.5}'"
    )
    _banner(notes + lines)

    await stop.wait()
    log.info("shutting down")
    if sim_task is not None:
        sim_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sim_task
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await api_task
    if provisioner is not None:  # security
        await provisioner.stop()
    await worker.stop()
    if broker is not None:
        await broker.stop()
    await engine.dispose()


DEMO_CONNECT_RATE = 4.0


async def _run_demo(mqtt_url: str, opts: ServeOptions, stop: asyncio.Event) -> None:
    try:
        from iotp.simulator import run_simulation
    except ImportError:
        log.warning("simulator not available; --demo ignored")
        return
    # A few connections a second: amqtt 0.12 can fail a session when several clients
    # connect and subscribe at the same instant ("dictionary changed size").
    await run_simulation(
        devices=opts.demo,
        broker_url=mqtt_url,
        interval=opts.demo_interval,
        seed=1,
        stop=stop,
        connect_rate=DEMO_CONNECT_RATE,
    )


async def run_worker(settings: Settings) -> None:
    engine = await prepare_database(settings)
    stop = asyncio.Event()
    _install_stop_signals(stop)
    worker = Worker(settings, engine, "mqtt://127.0.0.1:1883")
    connect = asyncio.create_task(worker.start(stop))
    provisioning = asyncio.create_task(start_provisioner(settings, engine, "mqtt://127.0.0.1:1883"))
    await stop.wait()
    if not provisioning.done():  # security
        provisioning.cancel()
    elif (provisioner := provisioning.result()) is not None:
        await provisioner.stop()
    if not connect.done():
        connect.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await connect
    await worker.stop()
    await engine.dispose()


async def run_api(settings: Settings, host: str, port: int) -> None:
    engine = await prepare_database(settings)
    app = create_app(settings, engine=engine)
    tls = uvicorn_tls(settings)  # security: HTTPS when a certificate is configured
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", ws="websockets-sansio", **tls
    )
    scheme = "https" if tls else "http"
    print(f"IoT Platform API on {scheme}://{host}:{port}/ (docs at /docs)", flush=True)
    await uvicorn.Server(config).serve()
    await engine.dispose()


async def run_broker(host: str, port: int, settings: Settings | None = None) -> None:
    # security: secure mode reads device credentials from the database; TLS from settings
    engine = await prepare_database(settings) if settings and settings.secure else None
    if settings is not None:
        broker = EmbeddedBroker.for_settings(settings, engine, host, port)
    else:
        broker = EmbeddedBroker(host, port)
    await broker.start()
    print(f"embedded MQTT broker on {broker.url}", flush=True)
    stop = asyncio.Event()
    _install_stop_signals(stop)
    await stop.wait()
    await broker.stop()
    if engine is not None:
        await engine.dispose()

"""`iotp`: one command line for every component."""

from __future__ import annotations

import asyncio
import enum
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from iotp import logs
from iotp.cli_adapters import adapters_app
from iotp.cli_firmware import firmware_app
from iotp.cli_security import (
    homeassistant_app,
    load_settings,
    mosquitto_app,
    rabbitmq_app,
    user_app,
    with_session,
)
from iotp.errors import ConfigurationError
from iotp.settings import Settings

app = typer.Typer(no_args_is_help=True, help="IoT Platform: devices, telemetry, control.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")  # security
app.add_typer(mosquitto_app, name="mosquitto")  # security
app.add_typer(rabbitmq_app, name="rabbitmq")  # operations: RabbitMQ device accounts
app.add_typer(firmware_app, name="firmware")
app.add_typer(adapters_app, name="adapters")
app.add_typer(homeassistant_app, name="homeassistant")


def _settings(data_dir: Path | None = None, open_mode: bool = False) -> Settings:
    settings = load_settings(open_mode)  # security: refuses weak secrets with a clear error
    if data_dir is not None:
        settings.data_dir = data_dir
    logs.setup(settings.log_level, settings.log_json)
    return settings


def _run(coro: object) -> None:
    try:
        try:
            import uvloop

            uvloop.run(coro)  # type: ignore[arg-type]
        except ImportError:
            asyncio.run(coro)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


def _explicit(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="HTTP bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8000,
    mqtt_port: Annotated[int, typer.Option(help="embedded broker port")] = 1883,
    mqtt_host: Annotated[
        str | None,
        typer.Option(help="MQTT bind address [default: 0.0.0.0; 127.0.0.1 in open mode]"),
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="where the SQLite file lives")] = Path("./data"),
    demo: Annotated[int, typer.Option(help="run N simulated devices")] = 0,
    demo_interval: Annotated[float, typer.Option(help="seconds between demo reports")] = 2.0,
    open_mode: Annotated[
        bool,
        typer.Option(
            "--open",
            help="open mode: any client may act as any device (same as IOTP_OPEN=true)",
        ),
    ] = False,
) -> None:
    """Broker + worker + API + dashboard in one process. Secure unless --open: devices
    join by provisioning (approved by an admin, or during a pairing window)."""
    from iotp.runtime import ServeOptions
    from iotp.runtime import serve as run_serve

    settings = _settings(data_dir, open_mode)
    if mqtt_host is None:  # open mode stays on this machine unless a host is given
        mqtt_host = "127.0.0.1" if settings.open else "0.0.0.0"
    opts = ServeOptions(
        host=host,
        port=port,
        port_explicit=_explicit(ctx, "port"),
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        mqtt_port_explicit=_explicit(ctx, "mqtt_port"),
        demo=demo,
        demo_interval=demo_interval,
    )
    _run(run_serve(settings, opts))


@app.command()
def worker() -> None:
    """The MQTT ingest worker (IOTP_MQTT_URL, IOTP_DATABASE_URL)."""
    from iotp.runtime import run_worker

    _run(run_worker(_settings()))


@app.command()
def api(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
) -> None:
    """The REST + WebSocket API (IOTP_MQTT_URL, IOTP_DATABASE_URL)."""
    from iotp.runtime import run_api

    _run(run_api(_settings(), host, port))


@app.command()
def broker(
    host: Annotated[str, typer.Option()] = "0.0.0.0",
    port: Annotated[int, typer.Option()] = 1883,
) -> None:
    """Only the embedded MQTT broker (amqtt)."""
    from iotp.runtime import run_broker

    _run(run_broker(host, port, _settings()))


class Runtime(enum.StrEnum):
    """Where `iotp simulate` runs the firmware."""

    cpython = "cpython"
    micropython = "micropython"


def _load_credentials(path: Path | None) -> dict[str, str] | None:
    """A JSON object {"<node id>": "<secret>", ...} (the passwords POST /api/credentials gave)."""
    if path is None:
        return None
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise typer.BadParameter(f'{path} must be a JSON object {{"<node id>": "<secret>"}}')
    return data


@app.command()
def simulate(
    devices: Annotated[int, typer.Option(help="number of simulated devices")] = 10,
    broker_url: Annotated[str, typer.Option("--broker", help="mqtt://host:port or mqtts://")] = (
        "mqtt://127.0.0.1:1883"
    ),
    interval: Annotated[float, typer.Option(help="seconds between reports")] = 2.0,
    seed: Annotated[int | None, typer.Option(help="random seed (device ids, physics)")] = None,
    id_prefix: Annotated[str, typer.Option(help="mixed into device ids (several fleets)")] = "SIM",
    fleet_secret: Annotated[
        str | None,
        typer.Option(
            envvar="IOTP_PROVISIONING_SECRET",
            help="secure mode: devices without credentials provision themselves with it",
        ),
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(help='secure mode: JSON file {"<node id>": "<secret>"} of issued credentials'),
    ] = None,
    ca: Annotated[
        Path | None, typer.Option(help="the broker's CA certificate (PEM) to pin; needs mqtts://")
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="keep the devices' credentials here, so a restart reconnects as them"),
    ] = None,
    ota_key: Annotated[
        Path | None,
        typer.Option(help="the key file devices are flashed with (`iotp firmware pubkey`)"),
    ] = None,
    runtime: Annotated[
        Runtime,
        typer.Option(
            help="cpython: all devices in this process; micropython: one MicroPython "
            "unix-port process per device, with an ESP32's heap"
        ),
    ] = Runtime.cpython,
    heap: Annotated[
        int | None,
        typer.Option(
            help="micropython: heap bytes per device (default: what the firmware runs in, "
            "an ESP32's equivalent from a ROMFS image, 1.4 of it from files; see "
            "firmware/README.md)"
        ),
    ] = None,
    romfs: Annotated[
        bool,
        typer.Option(
            help="micropython: devices built with ROMFS run the firmware in place from an "
            "image in flash; --no-romfs: from files, as on the stock MicroPython build"
        ),
    ] = True,
) -> None:
    """Run N devices with the real firmware logic on simulated hardware."""
    from iotp.simulator import Fleet, SimulatorError

    _settings()
    options: dict[str, Any] = {
        "devices": devices,
        "broker_url": broker_url,
        "interval": interval,
        "seed": seed,
        "id_prefix": id_prefix,
        "fleet_secret": fleet_secret or None,
        "credentials": _load_credentials(credentials),
        "ca_file": ca,
        "state_dir": state_dir,
        "ota_key": None if ota_key is None else ota_key.read_bytes(),
    }
    fleet: Any
    try:
        if runtime is Runtime.micropython:
            from iotp.simulator.mpy import MicroPythonFleet

            fleet = MicroPythonFleet(heap=heap, romfs=romfs, **options)
        else:
            fleet = Fleet(**options)
    except SimulatorError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    _run(fleet.run())


pairing_app = typer.Typer(
    no_args_is_help=True, help="The pairing window: provisioning devices are approved at once."
)
app.add_typer(pairing_app, name="pairing")


def _pairing_line(until: float | None) -> str:
    if until is None:
        return "pairing window: closed (provisioning devices wait for an admin's approval)"
    from datetime import UTC, datetime

    left = max(0, round((until - time.time()) / 60))
    at = datetime.fromtimestamp(until, UTC).strftime("%H:%M:%S UTC")
    return f"pairing window: open until {at} (~{left} min): new devices are approved at once"


@pairing_app.command("open")
def pairing_open(
    minutes: Annotated[float, typer.Option(help="how long the window stays open")] = 10,
) -> None:
    """Approve devices that provision with the fleet secret, for the next N minutes."""
    from iotp.services import pairing

    async def go(session: AsyncSession) -> float:
        return await pairing.open_window(session, minutes=minutes)

    typer.echo(_pairing_line(with_session(go)))


@pairing_app.command("close")
def pairing_close() -> None:
    """Close the window: provisioning devices wait for an admin again."""
    from iotp.services import pairing

    async def go(session: AsyncSession) -> None:
        await pairing.close_window(session)

    with_session(go)
    typer.echo(_pairing_line(None))


@pairing_app.command("status")
def pairing_status() -> None:
    """Is the window open, and until when."""
    from iotp.services import pairing

    async def go(session: AsyncSession) -> float | None:
        return await pairing.open_until(session)

    typer.echo(_pairing_line(with_session(go)))


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the migrations (IOTP_DATABASE_URL, or the SQLite file in IOTP_DATA_DIR)."""
    from iotp.db import migrate
    from iotp.db.engine import make_engine

    settings = _settings()

    async def go() -> None:
        if not settings.database_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.effective_database_url)
        await migrate.upgrade(engine, revision)
        print(f"database at {await migrate.current_revision(engine)}")
        await engine.dispose()

    _run(go())


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Summary of a running platform, read from the database (operations)."""
    from iotp.services.ops_status import read_status, render_status

    settings = _settings()

    async def go() -> None:
        data = await read_status(settings)
        if as_json:
            import orjson

            print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        else:
            print(render_status(data))

    _run(go())


if __name__ == "__main__":
    app()

"""`iotp user ...` and `iotp mosquitto ...`: security commands of the CLI."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.errors import IotpError, NotFoundError
from iotp.services import users as user_service
from iotp.services.auth import Role, generate_password
from iotp.settings import Settings, get_settings

user_app = typer.Typer(no_args_is_help=True, help="Users of the dashboard and API.")
T = TypeVar("T")


def load_settings(open_mode: bool = False) -> Settings:
    """Settings, with `--open` applied; weak secrets end the command with a clear error."""
    try:
        settings = get_settings()
        if open_mode and not settings.open:
            settings = Settings.model_validate({**settings.model_dump(), "open": True})
    except ValidationError as exc:
        messages = "; ".join(str(e["msg"]) for e in exc.errors())
        typer.secho(f"error: {messages}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    return settings


def with_session(fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from iotp.runtime import prepare_database

    async def go() -> T:
        engine = await prepare_database(load_settings())
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                result = await fn(session)
                await session.commit()
                return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except IotpError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)


def _password(given: str | None, generate: bool) -> tuple[str, bool]:
    if given:
        return given, False
    if generate:
        return generate_password(), True
    entered: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return entered, False


@user_app.command("create")
def create(
    username: str,
    role: Annotated[Role, typer.Option(help="viewer, operator or admin")] = Role.VIEWER,
    password: Annotated[
        str | None, typer.Option(help="default: prompt (or --generate)", envvar="IOTP_NEW_PASSWORD")
    ] = None,
    generate: Annotated[bool, typer.Option(help="generate a password and print it")] = False,
) -> None:
    """Create a user."""
    secret, generated = _password(password, generate)

    async def go(session: AsyncSession) -> None:
        await user_service.create(session, username=username, password=secret, role=role)

    with_session(go)
    typer.echo(f"created {role.value} {username!r}")
    if generated:
        typer.echo(f"password: {secret}")


@user_app.command("list")
def list_users() -> None:
    """List users (never their passwords)."""

    async def go(session: AsyncSession) -> list[tuple[int, str, str, bool]]:
        rows = await user_service.list_users(session)
        return [(u.id, u.username, u.role, u.disabled) for u in rows]

    for user_id, name, role, disabled in with_session(go):
        typer.echo(f"{user_id:>4}  {name:<32} {role:<9}{'  (disabled)' if disabled else ''}")


@user_app.command("set-password")
def set_password(
    username: str,
    password: Annotated[
        str | None, typer.Option(help="default: prompt (or --generate)", envvar="IOTP_NEW_PASSWORD")
    ] = None,
    generate: Annotated[bool, typer.Option(help="generate a password and print it")] = False,
) -> None:
    """Set a user's password (signs the user out everywhere)."""
    secret, generated = _password(password, generate)

    async def go(session: AsyncSession) -> None:
        await user_service.set_password(session, username=username, password=secret)

    with_session(go)
    typer.echo(f"password of {username!r} changed")
    if generated:
        typer.echo(f"password: {secret}")


@user_app.command("delete")
def delete(username: str) -> None:
    """Delete a user (not the last admin)."""

    async def go(session: AsyncSession) -> None:
        user = await user_service.get_by_name(session, username)
        if user is None:
            raise NotFoundError("user", username)
        await user_service.delete(session, user_id=user.id)

    with_session(go)
    typer.echo(f"deleted {username!r}")


mosquitto_app = typer.Typer(no_args_is_help=True, help="Mosquitto password and ACL files.")


@mosquitto_app.command("sync")
def mosquitto_sync(
    password_file: Annotated[Path, typer.Option(help="Mosquitto password_file to write")],
    acl_file: Annotated[Path, typer.Option(help="Mosquitto acl_file to write")],
    platform_password_file: Annotated[
        Path | None,
        typer.Option(help="the platform's accounts in files of their own (their own listener)"),
    ] = None,
    platform_acl_file: Annotated[
        Path | None, typer.Option(help="with --platform-password-file")
    ] = None,
    pid_file: Annotated[
        Path | None, typer.Option(help="send SIGHUP to this Mosquitto after a change")
    ] = None,
    reload_command: Annotated[
        str | None, typer.Option(help="or run this after a change, e.g. docker kill -s HUP mq")
    ] = None,
    once: Annotated[bool, typer.Option(help="write once and exit")] = False,
) -> None:
    """Write the files from the database, and again (then reload) whenever credentials change.
    Without --platform-* files, one pair holds every account (one listener)."""
    from iotp.broker.mosquitto import MosquittoSync
    from iotp.runtime import prepare_database

    settings = load_settings()
    platform_files = None
    if platform_password_file is not None or platform_acl_file is not None:
        if platform_password_file is None or platform_acl_file is None:
            typer.secho(
                "error: give both --platform-password-file and --platform-acl-file", err=True
            )
            sys.exit(2)
        platform_files = (platform_password_file, platform_acl_file)

    async def go() -> None:
        engine = await prepare_database(settings)
        sync = MosquittoSync(
            settings,
            engine,
            password_file=password_file,
            acl_file=acl_file,
            platform_files=platform_files,
            pid_file=pid_file,
            reload_command=reload_command,
        )
        try:
            if once:
                await sync.sync()
            else:
                await sync.run()
        finally:
            await engine.dispose()

    asyncio.run(go())


rabbitmq_app = typer.Typer(no_args_is_help=True, help="RabbitMQ device users and permissions.")


@rabbitmq_app.command("sync")
def rabbitmq_sync(
    once: Annotated[bool, typer.Option(help="apply once and exit")] = False,
) -> None:
    """Keep RabbitMQ's device users and topic permissions in step with the database,
    through the management API at IOTP_RABBITMQ_MANAGEMENT_URL (see docs/operations.md)."""
    from iotp.broker.rabbitmq import RabbitMQSync, management
    from iotp.runtime import prepare_database

    settings = load_settings()
    api = management(settings)
    if api is None:
        raise typer.BadParameter("set IOTP_RABBITMQ_MANAGEMENT_URL")

    async def go() -> None:
        engine = await prepare_database(settings)
        sync = RabbitMQSync(settings, engine, api)
        try:
            if once:
                await sync.ensure_service_accounts()
                await sync.sync()
            else:
                await sync.run()
        finally:
            await engine.dispose()

    asyncio.run(go())


homeassistant_app = typer.Typer(no_args_is_help=True, help="Home Assistant discovery.")


@homeassistant_app.command("credentials")
def homeassistant_credentials() -> None:
    """The broker account Home Assistant's MQTT integration logs in with (secure mode,
    IOTP_HOMEASSISTANT_DISCOVERY=true): its password is derived from the secret key."""
    from iotp.services.auth import ensure_secrets
    from iotp.services.credentials import HOMEASSISTANT_USER

    settings = load_settings()
    ensure_secrets(settings)
    if not settings.homeassistant_discovery:
        typer.secho(
            "note: IOTP_HOMEASSISTANT_DISCOVERY is not true: the broker has no such account",
            fg=typer.colors.YELLOW,
            err=True,
        )
    typer.echo(f"username: {HOMEASSISTANT_USER}")
    typer.echo(f"password: {settings.homeassistant_mqtt_password()}")
    typer.echo(f"discovery prefix: {settings.homeassistant_prefix}")


@homeassistant_app.command("account")
def homeassistant_device_account(
    node: Annotated[str, typer.Argument(help="the device's node id (its discovery topics)")],
    state_root: Annotated[
        str, typer.Option(help="it publishes readings, states and availability below this")
    ],
    command_root: Annotated[str, typer.Option(help="it reads its commands below this")],
) -> None:
    """Create or rotate the broker account of a device that announces itself with Home
    Assistant discovery (secure mode); prints its password once."""
    from iotp.broker import rabbitmq
    from iotp.services import discovery_accounts

    settings = load_settings()

    async def go(session: AsyncSession) -> tuple[list[str], list[str], str]:
        row, secret = await discovery_accounts.issue(
            session,
            settings=settings,
            node=node,
            state_root=state_root,
            command_root=command_root,
        )
        acl = row.acl or {}
        # RabbitMQ keeps its own copy of the password, when set up (broker/rabbitmq.py).
        await rabbitmq.store_device_secret(
            settings, row.device_id, secret, approved=True, acl=dict(acl)
        )
        return list(acl.get("write", [])), list(acl.get("read", [])), secret

    write, read, secret = with_session(go)
    typer.echo(f"username: {node}   (MQTT client id: {node})")
    typer.echo(f"password: {secret}   (shown once)")
    typer.echo(f"publishes: {', '.join(write)}")
    typer.echo(f"reads:     {', '.join(read)}")

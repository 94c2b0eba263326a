"""`iotp adapters ...`: mappings for foreign firmware and their clients' broker accounts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.adapters import AdapterEngine, MappingError, MappingFileError, load_file
from iotp.broker import rabbitmq
from iotp.cli_security import load_settings, with_session
from iotp.services import adapters as adapter_service

adapters_app = typer.Typer(
    no_args_is_help=True, help="Adapters for foreign firmware (Tasmota, Zigbee2MQTT, Shelly...)."
)


@adapters_app.command("list")
def list_mappings() -> None:
    """The mappings the platform knows, where they come from, and whether they are on."""
    settings = load_settings()

    async def go(session: AsyncSession) -> list[adapter_service.Entry]:
        return await adapter_service.entries(session, settings)

    for entry in with_session(go):
        state = "on " if entry.enabled else "off"
        typer.echo(f"{state} {entry.mapping.name:<16} {entry.source:<8} {entry.mapping.device_id}")


@adapters_app.command("account")
def account(
    mapping: Annotated[str, typer.Argument(help="tasmota, zigbee2mqtt, shelly, ...")],
    username: Annotated[str, typer.Argument(help="the client's MQTT username")],
    scope: Annotated[
        str | None,
        typer.Option(help="the Tasmota topic, the Shelly id; none for a Zigbee2MQTT bridge"),
    ] = None,
) -> None:
    """Create or rotate a foreign client's broker account; prints its password once."""
    settings = load_settings()

    async def go(session: AsyncSession) -> tuple[dict[str, Any], str]:
        row, secret = await adapter_service.issue_account(
            session, settings=settings, mapping_name=mapping, username=username, scope=scope
        )
        # RabbitMQ keeps its own copy of the password, when set up (broker/rabbitmq.py).
        await rabbitmq.store_device_secret(
            settings, row.device_id, secret, approved=True, acl=dict(row.acl or {})
        )
        return adapter_service.account_view(row), secret

    view, secret = with_session(go)
    typer.echo(f"username: {view['username']}")
    typer.echo(f"password: {secret}   (shown once)")
    typer.echo(f"publishes: {', '.join(view['write'])}")
    typer.echo(f"reads:     {', '.join(view['read'])}")


@adapters_app.command("dry-run")
def dry_run(
    mapping_file: Annotated[Path, typer.Argument(help="a mapping file (YAML or JSON)")],
    topic: str,
    payload: str,
) -> None:
    """What a sample message would become under a mapping file (nothing is stored)."""
    try:
        mapping = load_file(mapping_file)
        translation = AdapterEngine([mapping]).translate(topic, payload.encode())
    except (MappingFileError, MappingError, OSError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    if translation.ignored:
        typer.echo("ignored: no rule takes this topic, or its rule drops it")
    for native_topic, body in translation.messages:
        typer.echo(f"{native_topic} {body.decode()}")
    if not translation.messages and not translation.ignored:
        typer.echo(json.dumps({"device_ids": translation.device_ids}))

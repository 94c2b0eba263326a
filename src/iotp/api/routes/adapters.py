"""Adapters for foreign firmware: the mappings in force, mappings added or turned off at
run time (admins), a dry run of a sample message, and foreign clients' broker accounts
(admins). See docs/devices.md ("Devices running other firmware")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, Field

from iotp.adapters import AdapterEngine, Mapping, MappingError
from iotp.api.deps import SessionDep, StateDep
from iotp.api.schemas import iso
from iotp.broker import rabbitmq
from iotp.errors import InvalidRequestError, NotFoundError
from iotp.protocol import payloads as p
from iotp.protocol.topics import DEVICE_ID_PATTERN, parse_topic
from iotp.services import adapters as adapter_service
from iotp.services import discovery_accounts

router = APIRouter(prefix="/api/adapters", tags=["adapters"])
ADMIN: dict[str, Any] = {"x-iotp-role": "admin"}

MappingName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]


class AdapterPublic(BaseModel):
    name: str
    title: str
    description: str
    source: str = Field(description="builtin, file (IOTP_ADAPTERS_DIR) or api")
    enabled: bool
    device_id: str = Field(description="template of the platform device id")
    topics: list[str] = Field(description="the topic filters the workers subscribe to")
    commands: list[str]
    account: bool = Field(description="foreign clients of it can get a broker account")
    mapping: dict[str, Any]


class AdaptersPublic(BaseModel):
    data: list[AdapterPublic]
    count: int


def _public(entry: adapter_service.Entry) -> AdapterPublic:
    m = entry.mapping
    return AdapterPublic(
        name=m.name,
        title=m.title or m.name,
        description=m.description,
        source=entry.source,
        enabled=entry.enabled,
        device_id=m.device_id,
        topics=AdapterEngine([m]).subscriptions(),
        commands=sorted(m.commands),
        account=m.account is not None,
        mapping=m.model_dump(mode="json", exclude_defaults=True),
    )


@router.get("", response_model=AdaptersPublic)
async def list_adapters(session: SessionDep, state: StateDep) -> AdaptersPublic:
    entries = await adapter_service.entries(session, state.settings)
    return AdaptersPublic(data=[_public(e) for e in entries], count=len(entries))


# ---- dry run ---------------------------------------------------------------------------


class AdapterDryRunRequest(BaseModel):
    mapping: str | Mapping = Field(description="a mapping's name, or a whole mapping to try")
    topic: str = Field(min_length=1, max_length=256)
    payload: Any = Field(description="the message: a JSON value, or a string sent as is")


class AdapterNativeMessage(BaseModel):
    topic: str
    payload: Any


class AdapterStoredSample(BaseModel):
    device_id: str
    metrics: dict[str, float]
    attributes: dict[str, Any]


class AdapterDryRunResult(BaseModel):
    mapping: str | None
    rule: str | None
    ignored: bool = Field(description="no rule takes this topic, or its rule drops it")
    device_ids: list[str]
    messages: list[AdapterNativeMessage] = Field(
        description="the platform's own messages it becomes"
    )
    stored: list[AdapterStoredSample] = Field(description="telemetry samples that would be stored")
    units: dict[str, dict[str, str]] = Field(description="device id -> metric -> unit")
    rejected: str | None = Field(description="why the worker would reject it (reason: detail)")


@router.post("/dry-run", response_model=AdapterDryRunResult, responses={404: {}, 422: {}})
async def dry_run(
    session: SessionDep, state: StateDep, body: AdapterDryRunRequest
) -> AdapterDryRunResult:
    """What a sample message would become and store; nothing is stored or sent. The
    engine starts empty, so the device's registration (its info) shows too."""
    if isinstance(body.mapping, Mapping):
        mapping = body.mapping
    else:
        found = {
            e.mapping.name: e.mapping
            for e in await adapter_service.entries(session, state.settings)
        }
        if body.mapping not in found:
            raise NotFoundError("mapping", body.mapping)
        mapping = found[body.mapping]
    raw = body.payload.encode() if isinstance(body.payload, str) else orjson.dumps(body.payload)
    result = AdapterDryRunResult(
        mapping=mapping.name,
        rule=None,
        ignored=False,
        device_ids=[],
        messages=[],
        stored=[],
        units={},
        rejected=None,
    )
    try:
        translation = AdapterEngine([mapping]).translate(body.topic, raw)
    except MappingError as exc:
        result.rejected = str(exc)
        return result
    result.rule = translation.rule
    result.ignored = translation.ignored
    result.device_ids = translation.device_ids
    for topic, payload in translation.messages:
        device_id, kind = parse_topic(topic)
        shown: Any = payload.decode() if kind.value == "status" else orjson.loads(payload)
        result.messages.append(AdapterNativeMessage(topic=topic, payload=shown))
        try:
            if kind.value == "data":
                msg = p.parse_data(payload)
                result.stored.append(
                    AdapterStoredSample(
                        device_id=device_id, metrics=msg.metrics, attributes=msg.attributes or {}
                    )
                )
            elif kind.value == "info":
                info = p.parse_info(payload)
                if info.units:
                    result.units[device_id] = dict(info.units)
            elif kind.value == "status":
                p.parse_status(payload)
            elif kind.value == "ack":
                p.parse_ack(payload)
        except p.RejectedMessage as exc:
            result.rejected = str(exc)
    return result


# ---- foreign clients' broker accounts ------------------------------------------------------


class AccountCreate(BaseModel):
    username: str = Field(pattern=DEVICE_ID_PATTERN, description="the client's MQTT username")
    scope: str | None = Field(
        default=None,
        max_length=64,
        description="what the account covers: the Tasmota topic, the Shelly id; none for a "
        "Zigbee2MQTT bridge (its base topic)",
    )


class AccountPublic(BaseModel):
    username: str
    mapping: str | None
    status: str
    write: list[str]
    read: list[str]
    updated_at: datetime | None


class AccountIssued(AccountPublic):
    password: str = Field(description="shown only in this response")


class AccountsPublic(BaseModel):
    data: list[AccountPublic]
    count: int


def _account(row: Any) -> AccountPublic:
    view = adapter_service.account_view(row)
    view["updated_at"] = iso(view["updated_at"])
    return AccountPublic(**view)


@router.get("/accounts", response_model=AccountsPublic, openapi_extra=ADMIN)
async def list_accounts(session: SessionDep) -> AccountsPublic:
    """Foreign clients' broker accounts (revoke or forget one with /api/credentials)."""
    rows = await adapter_service.accounts(session)
    return AccountsPublic(data=[_account(r) for r in rows], count=len(rows))


class DiscoveryAccountCreate(BaseModel):
    node: str = Field(
        pattern=DEVICE_ID_PATTERN,
        description="the node id in its discovery topics: its device id, MQTT username and "
        "client id",
    )
    state_root: str = Field(
        max_length=256, description="it publishes readings, states and availability below this"
    )
    command_root: str = Field(max_length=256, description="it reads its commands below this")


# Declared before /{name}/accounts: Home Assistant discovery is not a mapping.
@router.post(
    "/homeassistant/accounts",
    response_model=AccountIssued,
    status_code=status.HTTP_201_CREATED,
    responses={422: {}},
    openapi_extra=ADMIN,
)
async def create_discovery_account(
    session: SessionDep, state: StateDep, body: DiscoveryAccountCreate
) -> AccountIssued:
    """Create or rotate the account of a device that announces itself with Home
    Assistant discovery: it may publish only its own discovery configs
    (``<prefix>/+/<node>/+/config``) and below its state root, and read only below its
    command root. The password is shown once."""
    row, secret = await discovery_accounts.issue(
        session,
        settings=state.settings,
        node=body.node,
        state_root=body.state_root,
        command_root=body.command_root,
    )
    try:  # RabbitMQ keeps its own copy of the password (broker/rabbitmq.py), when set up
        await rabbitmq.store_device_secret(
            state.settings, row.device_id, secret, approved=True, acl=dict(row.acl or {})
        )
    except rabbitmq.RabbitMQError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    await session.commit()
    return AccountIssued(**_account(row).model_dump(), password=secret)


@router.post(
    "/{name}/accounts",
    response_model=AccountIssued,
    status_code=status.HTTP_201_CREATED,
    responses={404: {}, 422: {}},
    openapi_extra=ADMIN,
)
async def create_account(
    session: SessionDep, state: StateDep, name: MappingName, body: AccountCreate
) -> AccountIssued:
    """Create or rotate a foreign client's account: it may publish and read only its
    mapping's topics for its scope. The password is shown once."""
    row, secret = await adapter_service.issue_account(
        session,
        settings=state.settings,
        mapping_name=name,
        username=body.username,
        scope=body.scope,
    )
    try:  # RabbitMQ keeps its own copy of the password (broker/rabbitmq.py), when set up
        await rabbitmq.store_device_secret(
            state.settings, row.device_id, secret, approved=True, acl=dict(row.acl or {})
        )
    except rabbitmq.RabbitMQError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    await session.commit()
    return AccountIssued(**_account(row).model_dump(), password=secret)


# ---- mappings at run time ----------------------------------------------------------------


@router.get("/{name}", response_model=AdapterPublic, responses={404: {}})
async def get_adapter(session: SessionDep, state: StateDep, name: MappingName) -> AdapterPublic:
    for entry in await adapter_service.entries(session, state.settings):
        if entry.mapping.name == name:
            return _public(entry)
    raise NotFoundError("mapping", name)


@router.put("/{name}", response_model=AdapterPublic, responses={422: {}}, openapi_extra=ADMIN)
async def put_adapter(
    session: SessionDep, state: StateDep, name: MappingName, mapping: Mapping
) -> AdapterPublic:
    """Add or replace a mapping; every worker takes it up within
    IOTP_ADAPTERS_POLL_SECONDS. It replaces a shipped or file mapping of the same name."""
    if mapping.name != name:
        raise InvalidRequestError(f"the mapping is named {mapping.name!r}, not {name!r}")
    await adapter_service.save(session, mapping=mapping, enabled=True)
    await session.commit()
    return _public(adapter_service.Entry(mapping, "api", True))


class AdapterSwitch(BaseModel):
    enabled: bool


@router.patch("/{name}", response_model=AdapterPublic, responses={404: {}}, openapi_extra=ADMIN)
async def switch_adapter(
    session: SessionDep, state: StateDep, name: MappingName, body: AdapterSwitch
) -> AdapterPublic:
    """Turn a mapping on or off at run time (a shipped one too)."""
    row = await adapter_service.set_enabled(
        session, settings=state.settings, name=name, enabled=body.enabled
    )
    await session.commit()
    return _public(adapter_service.Entry(Mapping.model_validate(row.spec), "api", row.enabled))


@router.delete(
    "/{name}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {}}, openapi_extra=ADMIN
)
async def delete_adapter(session: SessionDep, name: MappingName) -> Response:
    """Forget a mapping saved through the API (a shipped one returns to its setting)."""
    await adapter_service.delete(session, name=name)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)

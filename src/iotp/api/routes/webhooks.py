"""Webhooks: subscriptions, the secret shown once, test delivery, the delivery log."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from iotp.api.deps import SessionDep, StateDep
from iotp.api.schemas import iso
from iotp.db.automation_models import WebhookDelivery, WebhookRow
from iotp.protocol.events import WebhookEventType
from iotp.protocol.topics import DeviceId
from iotp.services import webhook_delivery as delivery
from iotp.services import webhooks as webhook_service

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    url: str = Field(min_length=8, max_length=2000, examples=["https://example.com/hooks/iotp"])
    events: list[WebhookEventType] = Field(min_length=1)
    devices: list[DeviceId] = Field(
        default_factory=list, max_length=1000, description="only these devices; empty = all"
    )


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=128)
    url: str | None = Field(default=None, min_length=8, max_length=2000)
    events: list[WebhookEventType] | None = Field(default=None, min_length=1)
    devices: list[DeviceId] | None = Field(default=None, max_length=1000)
    enabled: bool | None = None


class WebhookPublic(BaseModel):
    id: int
    name: str
    url: str
    events: list[str]
    devices: list[str]
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    created_at: datetime
    updated_at: datetime
    last_success_at: datetime | None
    last_failure_at: datetime | None

    @classmethod
    def of(cls, row: WebhookRow) -> WebhookPublic:
        d = webhook_service.to_dict(row)
        for k in ("created_at", "updated_at", "last_success_at", "last_failure_at"):
            d[k] = iso(d[k])
        return cls.model_validate(d)


class WebhookSecret(WebhookPublic):
    secret: str = Field(description="shown only now: store it to verify signatures")


class WebhooksPublic(BaseModel):
    data: list[WebhookPublic]
    count: int
    private_targets_allowed: bool = Field(
        description="targets on private, loopback or link-local addresses (the LAN: Node-RED,"
        " Home Assistant) are accepted: IOTP_WEBHOOK_ALLOW_PRIVATE"
    )


class DeliveryPublic(BaseModel):
    id: int
    webhook_id: int
    event_id: str
    event_type: str
    device_id: str | None
    status: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_duration_ms: float | None
    body: dict[str, Any]

    @classmethod
    def of(cls, row: WebhookDelivery) -> DeliveryPublic:
        d = webhook_service.delivery_dict(row)
        for k in ("next_attempt_at", "created_at", "finished_at"):
            d[k] = iso(d[k])
        return cls.model_validate(d)


class DeliveriesPublic(BaseModel):
    data: list[DeliveryPublic]
    count: int


@router.get("", response_model=WebhooksPublic)
async def list_webhooks(session: SessionDep, state: StateDep) -> WebhooksPublic:
    rows = await webhook_service.list_webhooks(session)
    return WebhooksPublic(
        data=[WebhookPublic.of(r) for r in rows],
        count=len(rows),
        private_targets_allowed=state.settings.webhook_allow_private,
    )


@router.post("", response_model=WebhookSecret, status_code=status.HTTP_201_CREATED)
async def create_webhook(
    state: StateDep, session: SessionDep, body: WebhookCreate
) -> WebhookSecret:
    """The response carries the signing secret: the only time it is shown."""
    row, secret = await webhook_service.create(
        session,
        name=body.name,
        url=body.url,
        events=body.events,
        devices=body.devices,
        allow_private=state.settings.webhook_allow_private,
    )
    await session.commit()
    return WebhookSecret(**WebhookPublic.of(row).model_dump(), secret=secret)


@router.get("/{webhook_id}", response_model=WebhookPublic)
async def get_webhook(session: SessionDep, webhook_id: int) -> WebhookPublic:
    return WebhookPublic.of(await webhook_service.get(session, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookPublic)
async def update_webhook(
    state: StateDep, session: SessionDep, webhook_id: int, body: WebhookUpdate
) -> WebhookPublic:
    row = await webhook_service.update_webhook(
        session,
        webhook_id=webhook_id,
        allow_private=state.settings.webhook_allow_private,
        **body.model_dump(exclude_unset=True),
    )
    await session.commit()
    return WebhookPublic.of(row)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(session: SessionDep, webhook_id: int) -> Response:
    await webhook_service.delete(session, webhook_id=webhook_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookSecret)
async def rotate_secret(session: SessionDep, webhook_id: int) -> WebhookSecret:
    """A new signing secret (shown once); the old one stops working at once."""
    row, secret = await webhook_service.rotate_secret(session, webhook_id=webhook_id)
    await session.commit()
    return WebhookSecret(**WebhookPublic.of(row).model_dump(), secret=secret)


@router.post("/{webhook_id}/test", response_model=DeliveryPublic)
async def test_delivery(state: StateDep, session: SessionDep, webhook_id: int) -> DeliveryPublic:
    """Send a signed ``test`` event now and return its logged outcome (not retried)."""
    hook = await webhook_service.get(session, webhook_id)
    now = time.time()
    body = webhook_service.event_body("test", None, {"webhook_id": hook.id, "name": hook.name}, now)
    (row,) = webhook_service.add_deliveries(session, [hook.id], body, now)
    row.attempts = 0
    row.status = webhook_service.DeliveryStatus.FAILED  # not picked up by a worker meanwhile
    await session.commit()
    settings = state.settings
    async with httpx.AsyncClient() as client:
        outcome = await delivery.send(
            client,
            url=hook.url,
            secret=hook.secret,
            body=body,
            request_timeout=settings.webhook_timeout_seconds,
            allow_private=settings.webhook_allow_private,
        )
    row.attempts = 1
    row.status = (
        webhook_service.DeliveryStatus.DELIVERED
        if outcome.ok
        else webhook_service.DeliveryStatus.FAILED
    )
    row.finished_at = time.time()
    row.last_status_code = outcome.status_code
    row.last_error = outcome.error
    row.last_duration_ms = round(outcome.duration_ms, 2)
    await session.commit()
    return DeliveryPublic.of(row)


@router.get("/{webhook_id}/deliveries", response_model=DeliveriesPublic)
async def deliveries(
    session: SessionDep,
    webhook_id: int,
    status_: Annotated[
        Literal["pending", "delivered", "failed"] | None, Query(alias="status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DeliveriesPublic:
    await webhook_service.get(session, webhook_id)
    rows, total = await webhook_service.list_deliveries(
        session, webhook_id=webhook_id, status=status_, limit=limit, offset=offset
    )
    return DeliveriesPublic(data=[DeliveryPublic.of(r) for r in rows], count=total)

"""Device provisioning over MQTT (secure mode), the same on every broker.

An unknown device connects with username ``provision``, the fleet provisioning secret
as password and its node id as client id. The broker lets it publish only to
``provision/{client id}/request`` and subscribe only to ``provision/{client id}/response``.
It subscribes, then publishes ``{"secret": "<a random secret it generated>"}``. The
platform answers ``{"status": "pending" | "approved" | "revoked" | "rejected"}``; once
approved, the device reconnects with username = its node id and password = that secret.
A device that hears nothing asks again (the answer is not retained).

Refusals say why in ``error``: another secret holds the id (counted, alerted: see
services.credentials), or a limit (requests per id and overall, pending requests), which
end in "ask again later" so the firmware keeps asking.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from typing import Protocol

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from iotp.broker.rabbitmq import store_device_secret
from iotp.errors import InvalidRequestError
from iotp.mqtt import MqttLink
from iotp.protocol.events import EventPublisher, EventType
from iotp.protocol.provisioning import PROVISION_ROOT, response_topic
from iotp.protocol.topics import DEVICE_ID_RE
from iotp.ratelimit import DeviceRateLimiter
from iotp.services import credentials as cred_service
from iotp.services import pairing
from iotp.services.alerts import to_dict as alert_dict
from iotp.services.credentials import (
    PROVISIONING_BURST,
    PROVISIONING_ID_BURST,
    RESERVED_USERNAMES,
    CredentialStatus,
    ProvisioningConflict,
    ProvisioningFull,
)
from iotp.settings import Settings

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024
ALL_IDS = "*"


class Publisher(Protocol):
    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> None: ...


def publish_answer(
    link: Publisher, device_id: str, status: CredentialStatus | str, error: str | None = None
) -> None:
    body: dict[str, str] = {"status": str(status)}
    if error:
        body["error"] = error
    link.publish(response_topic(device_id), orjson.dumps(body), qos=1)


def _parse_request(payload: bytes) -> str:
    if len(payload) > MAX_REQUEST_BYTES:
        raise InvalidRequestError("request too large")
    body = orjson.loads(payload)
    secret = body.get("secret") if isinstance(body, dict) else None
    if not isinstance(secret, str):
        raise InvalidRequestError('request must be {"secret": "<string>"}')
    return secret


class Provisioner:
    """Answers provisioning requests; runs beside the worker in secure mode."""

    def __init__(self, settings: Settings, engine: AsyncEngine, mqtt_default: str) -> None:
        self.settings = settings
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        topic = f"{PROVISION_ROOT}/+/request"
        if settings.mqtt_share_group:
            topic = f"$share/{settings.mqtt_share_group}/{topic}"
        self.link = MqttLink(
            settings.mqtt(mqtt_default, role="provisioner"),
            client_id=f"iotp.provisioner.{uuid.uuid4().hex[:8]}",
            subscriptions=[(topic, 1)],
            handler=self.handle,
            clean_session=True,
        )
        self.handled = 0
        # outcome -> requests: approved, pending, revoked, rejected, conflict,
        # rate_limited, capped (logged; tests and docs/security.md read them)
        self.outcomes: Counter[str] = Counter()
        self.per_id = DeviceRateLimiter(settings.provisioning_rate_per_id, PROVISIONING_ID_BURST)
        self.overall = DeviceRateLimiter(settings.provisioning_rate, PROVISIONING_BURST)

    async def start(self, stop: asyncio.Event | None = None) -> None:
        await self.link.connect(stop)

    async def stop(self) -> None:
        await self.link.close()

    async def handle(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != PROVISION_ROOT or parts[2] != "request":
            return
        device_id = parts[1]
        if DEVICE_ID_RE.fullmatch(device_id) is None or device_id in RESERVED_USERNAMES:
            return
        now = time.time()
        if not self.per_id.allow(device_id, now) or not self.overall.allow(ALL_IDS, now):
            self._refuse(device_id, "rate_limited", "too many requests: ask again later")
            return
        try:
            secret = _parse_request(payload)
            try:
                status = await self._request(device_id, secret, now)
            except IntegrityError:
                # a repeat of this id's first request, handled at the same moment, made
                # its row first: this one now finds it and is answered as a repeat
                status = await self._request(device_id, secret, now)
        except ProvisioningConflict as exc:
            await self._alert(exc, now)
            self._refuse(device_id, "conflict", str(exc))
            return
        except ProvisioningFull as exc:
            self._refuse(device_id, "capped", str(exc))
            return
        except (orjson.JSONDecodeError, InvalidRequestError) as exc:
            self._refuse(device_id, "rejected", str(exc))
            return
        except Exception:
            log.exception("provisioning request from %s failed", device_id)
            publish_answer(self.link, device_id, "rejected", "internal error, ask again later")
            return
        self.handled += 1
        self.outcomes[status.value] += 1
        log.info("provisioning request from %s: %s", device_id, status.value)
        publish_answer(self.link, device_id, status)

    async def _request(self, device_id: str, secret: str, now: float) -> CredentialStatus:
        async with self.sessions.begin() as session:
            pairing_open = await pairing.open_until(session) is not None
            status = await cred_service.request(
                session,
                device_id=device_id,
                secret=secret,
                auto_approve=self.settings.auto_approve or pairing_open,
                max_pending=self.settings.provisioning_max_pending,
                now=now,
            )
            if status is not CredentialStatus.REVOKED:  # RabbitMQ: its own password copy
                approved = status is CredentialStatus.APPROVED
                await store_device_secret(self.settings, device_id, secret, approved=approved)
        return status

    def _refuse(self, device_id: str, outcome: str, reason: str) -> None:
        self.outcomes[outcome] += 1
        log.warning("provisioning request from %s refused (%s): %s", device_id, outcome, reason)
        publish_answer(self.link, device_id, "rejected", reason)

    async def _alert(self, conflict: ProvisioningConflict, now: float) -> None:
        """Counted on the id's row, alerted to admins (and to open dashboards)."""
        try:
            async with self.sessions.begin() as session:
                row, created = await cred_service.record_conflict(session, conflict, now)
                data = alert_dict(row)
        except Exception:
            log.exception("recording the provisioning conflict for %s failed", conflict.device_id)
            return
        if created:
            publish = EventPublisher(self.settings.events_topic_prefix, self.link.publish)
            publish(EventType.ALERT, conflict.device_id, {"action": "raised", **data}, now)


async def start_provisioner(
    settings: Settings, engine: AsyncEngine, mqtt_default: str, stop: asyncio.Event | None = None
) -> Provisioner | None:
    """In secure mode, beside every worker: answer provisioning requests. Connecting
    retries until it works or ``stop`` is set."""
    if not settings.secure:
        return None
    provisioner = Provisioner(settings, engine, mqtt_default)
    await provisioner.start(stop)
    return provisioner

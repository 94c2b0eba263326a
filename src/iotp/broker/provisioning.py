"""Device provisioning over MQTT (secure mode), the same on every broker.

An unknown device connects with username ``provision``, the fleet provisioning secret
as password and its node id as client id. The broker lets it publish only to
``provision/{client id}/request`` and subscribe only to ``provision/{client id}/response``.
It subscribes, then publishes ``{"secret": "<a random secret it generated>"}``. The
platform answers ``{"status": "pending" | "approved" | "revoked" | "rejected"}``; once
approved, the device reconnects with username = its node id and password = that secret.
A device that hears nothing asks again (the answer is not retained).
"""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from iotp.mqtt import MqttLink
from iotp.protocol.topics import DEVICE_ID_RE
from iotp.services import credentials as cred_service
from iotp.services import pairing
from iotp.services.credentials import RESERVED_USERNAMES, CredentialStatus
from iotp.services.errors import InvalidRequestError
from iotp.settings import Settings

log = logging.getLogger(__name__)

PROVISION_USER = "provision"
PROVISION_ROOT = "provision"
MAX_REQUEST_BYTES = 1024


def request_topic(device_id: str) -> str:
    return f"{PROVISION_ROOT}/{device_id}/request"


def response_topic(device_id: str) -> str:
    return f"{PROVISION_ROOT}/{device_id}/response"


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

    async def start(self) -> None:
        await self.link.connect()

    async def stop(self) -> None:
        await self.link.close()

    async def handle(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != PROVISION_ROOT or parts[2] != "request":
            return
        device_id = parts[1]
        if DEVICE_ID_RE.fullmatch(device_id) is None or device_id in RESERVED_USERNAMES:
            return
        try:
            secret = _parse_request(payload)
            async with self.sessions.begin() as session:
                pairing_open = await pairing.open_until(session) is not None
                status = await cred_service.request(
                    session,
                    device_id=device_id,
                    secret=secret,
                    auto_approve=self.settings.auto_approve or pairing_open,
                )
                if status is not CredentialStatus.REVOKED:  # RabbitMQ: its own password copy
                    from iotp.broker.rabbitmq import store_device_secret

                    approved = status is CredentialStatus.APPROVED
                    await store_device_secret(self.settings, device_id, secret, approved=approved)
        except (orjson.JSONDecodeError, InvalidRequestError) as exc:
            publish_answer(self.link, device_id, "rejected", str(exc))
            return
        except Exception:
            log.exception("provisioning request from %s failed", device_id)
            publish_answer(self.link, device_id, "rejected", "internal error, ask again later")
            return
        self.handled += 1
        log.info("provisioning request from %s: %s", device_id, status.value)
        publish_answer(self.link, device_id, status)


async def start_provisioner(
    settings: Settings, engine: AsyncEngine, mqtt_default: str
) -> Provisioner | None:
    """In secure mode, beside every worker: answer provisioning requests."""
    if not settings.secure:
        return None
    provisioner = Provisioner(settings, engine, mqtt_default)
    await provisioner.start()
    return provisioner

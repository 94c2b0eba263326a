"""Long-lived resources of one API process, created in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from iotp.api.hub import Hub
from iotp.api.waiters import CommandWaiters
from iotp.mqtt import MqttLink
from iotp.protocol import Kind, RejectedMessage, parse_topic
from iotp.protocol.events import EventPublisher, EventType, event_subscription
from iotp.protocol.payloads import parse_ack, parse_data
from iotp.protocol.topics import TopicError, subscription
from iotp.services import stats as stats_service
from iotp.services.auth import resolve_secret_key
from iotp.services.command_sender import Sender
from iotp.services.commands import SecretBox
from iotp.settings import MqttUrl, Settings
from iotp.tasks import cancel_all

log = logging.getLogger(__name__)

DATA_SUBSCRIPTION = subscription(Kind.DATA)
# Devices' command acks: `?wait=true` answers from the device's own ack (see waiters.py).
ACK_SUBSCRIPTION = subscription(Kind.ACK)


class ApiState:
    def __init__(
        self, settings: Settings, engine: AsyncEngine, mqtt_default: str, device_mqtt_url: str = ""
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.started_at = time.time()
        self.component_id = f"api:{uuid.uuid4().hex[:12]}"
        self.hub = Hub(
            settings.ws_client_queue,
            on_interest_change=self._sync_subscriptions,
            until_live=self.link_until_subscribed,
        )
        self.command_waiters = CommandWaiters()  # device control: ?wait=true
        self.events_prefix = settings.events_topic_prefix
        # Where devices connect, which the dashboard's hints and /api/info tell.
        self.device_url = MqttUrl(
            device_mqtt_url or settings.device_mqtt_url or settings.mqtt_url or mqtt_default
        )
        self.link = MqttLink(
            settings.mqtt(mqtt_default, role="api"),
            client_id=f"iotp.{self.component_id.replace(':', '.')}",
            # Command updates always (they end `?wait=true`); other event types only while
            # a WebSocket client here asks for them (_sync_subscriptions): each one taken
            # costs this process a message per event.
            subscriptions=[
                (event_subscription(self.events_prefix, EventType.COMMAND_UPDATE), 1),
                (ACK_SUBSCRIPTION, 0),
            ],
            handler=self._on_message,
            clean_session=True,
            ack_after_handler=False,
        )
        # To every API instance's WebSocket clients (through the broker).
        self.publish_event = EventPublisher(self.events_prefix, self.link.publish)
        self._data_subscribed = False
        self._events_subscribed: set[str] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        # Device control: commands to online devices are published from here (the worker
        # handles the rest); sends awaiting the broker's PUBACK run in the background.
        self.command_sender = Sender(
            sessions=self.sessions,
            box=SecretBox(resolve_secret_key(settings)),
            owner=self.component_id,
            publish_confirmed=self.link.publish_confirmed,
            publish_event=self.publish_event,
        )
        self.command_sends: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._connect(), name="api-mqtt"))
        self._tasks.append(asyncio.create_task(self._stats_loop(), name="api-stats"))

    async def _connect(self) -> None:
        await self.link.connect()

    async def stop(self) -> None:
        if self.command_sends:  # let PUBACKs in flight be recorded (else: stale claims)
            await asyncio.wait(set(self.command_sends), timeout=5)
        await cancel_all(self._tasks)
        await self.link.close()

    def session(self) -> AsyncSession:
        return self.sessions()

    async def link_until_subscribed(self) -> None:
        """Until the broker has acknowledged our subscriptions (events, and the raw data
        stream if a client just asked for it): a WebSocket client is told "subscribed"
        only then, so nothing published after that answer is missed."""
        await self.link.until_subscribed()

    def _sync_subscriptions(self) -> None:
        """Take the raw data stream and each event type from the broker only while some
        client wants it."""
        wanted = self.hub.wanted_events()
        want = EventType.DEVICE_DATA in wanted
        if want and not self._data_subscribed:
            self.link.subscribe(DATA_SUBSCRIPTION, qos=0)
            self._data_subscribed = True
        elif not want and self._data_subscribed:
            self.link.unsubscribe(DATA_SUBSCRIPTION)
            self._data_subscribed = False
        types = wanted - {EventType.DEVICE_DATA, EventType.COMMAND_UPDATE}
        for event_type in sorted(types - self._events_subscribed):
            self.link.subscribe(event_subscription(self.events_prefix, event_type), qos=1)
        for event_type in sorted(self._events_subscribed - types):
            self.link.unsubscribe(event_subscription(self.events_prefix, event_type))
        self._events_subscribed = set(types)

    def _on_message(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if topic.startswith(self.events_prefix):
            parts = topic.split("/")
            if len(parts) >= 2:
                if parts[-2] == EventType.COMMAND_UPDATE:  # ?wait=true
                    self.command_waiters.feed(payload)
                self.hub.broadcast(parts[-2], parts[-1], payload.decode())
            return
        try:
            device_id, kind = parse_topic(topic)
            if kind is Kind.ACK:
                if self.command_waiters or self.command_sender.recording:
                    ack = parse_ack(payload)
                    self.command_waiters.feed_ack(device_id, ack)
                    self.command_sender.answered(device_id, ack)
                return
            if kind is not Kind.DATA:
                return
            msg = parse_data(payload)
        except (TopicError, RejectedMessage):
            return  # the worker counts and logs rejections
        event = {
            "type": EventType.DEVICE_DATA,
            "device_id": device_id,
            "ts": msg.ts,
            "payload": {"metrics": msg.metrics, "attributes": msg.attributes, "seq": msg.seq},
        }
        self.hub.broadcast(EventType.DEVICE_DATA, device_id, orjson.dumps(event).decode())

    async def _stats_loop(self) -> None:
        while True:
            try:
                async with self.sessions.begin() as session:
                    await stats_service.publish(
                        session,
                        component_id=self.component_id,
                        kind="api",
                        started_at=self.started_at,
                        data={
                            "ws_clients": len(self.hub.clients),
                            "ws_dropped": self.hub.dropped_total,
                            "mqtt_connected": self.link.is_connected,
                        },
                    )
            except Exception as exc:  # noqa: BLE001 - stats must not stop the API
                log.warning("writing API stats failed: %s", exc)
            await asyncio.sleep(self.settings.stats_flush_seconds)

"""Platform events: the messages the worker and the API publish for every API replica
(WebSocket clients), automations and webhooks, on ``{prefix}/{type}/{device_id}``."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Literal, get_args

import orjson


class EventType(StrEnum):
    DEVICE_DATA = "device_data"
    DEVICE_STATUS = "device_status"
    DEVICE_REGISTERED = "device_registered"
    DEVICE_UPDATED = "device_updated"
    DEVICE_DELETED = "device_deleted"
    DEVICE_STATE = "device_state"
    DEVICE_EVENT = "device_event"
    COMMAND_ACK = "command_ack"
    COMMAND_UPDATE = "command_update"
    ALERT = "alert"  # raised / acknowledged / cleared
    NOTIFICATION = "notification"  # a rule's notify action


EVENT_TYPES = frozenset(EventType)

# What a webhook can subscribe to: "telemetry" is a stored batch's metrics, which only
# webhooks receive (the dashboard streams device_data).
WebhookEventType = Literal[
    EventType.DEVICE_REGISTERED,
    EventType.DEVICE_STATUS,
    EventType.ALERT,
    EventType.COMMAND_UPDATE,
    "telemetry",
    EventType.NOTIFICATION,
]
WEBHOOK_EVENT_TYPES: tuple[str, ...] = tuple(str(t) for t in get_args(WebhookEventType))

# (topic, payload, qos)
Publish = Callable[[str, bytes, int], None]
# (type, device id, payload, ts)
PublishEvent = Callable[[str, str, dict[str, Any], float], None]


def encode_event(
    event_type: str, device_id: str, payload: dict[str, Any], ts: float | None = None
) -> bytes:
    return orjson.dumps(
        {
            "type": event_type,
            "device_id": device_id,
            "ts": time.time() if ts is None else ts,
            "payload": payload,
        }
    )


def event_topic(prefix: str, event_type: str, device_id: str) -> str:
    return f"{prefix}/{event_type}/{device_id}"


def event_subscription(prefix: str, event_type: str | None = None) -> str:
    return f"{prefix}/{event_type}/+" if event_type else f"{prefix}/#"


class EventPublisher:
    """The one way to publish a platform event (QoS 1: dashboards and automations
    must not miss an alert or a command's end)."""

    def __init__(self, prefix: str, publish: Publish) -> None:
        self.prefix = prefix
        self._publish = publish

    def __call__(
        self, event_type: str, device_id: str, payload: dict[str, Any], ts: float | None = None
    ) -> None:
        self._publish(
            event_topic(self.prefix, event_type, device_id),
            encode_event(event_type, device_id, payload, ts),
            1,
        )

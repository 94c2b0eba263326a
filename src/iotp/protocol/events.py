"""Platform events: the messages the worker and the API publish for every API replica
(WebSocket clients), automations and webhooks, on ``{prefix}/{type}/{device_id}``."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field


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
    RULE_FIRED = "rule_fired"  # a rule's counters after it fired (the rule list)


EVENT_TYPES = frozenset(EventType)


class Presence(StrEnum):
    UNKNOWN = "unknown"
    ONLINE = "online"
    OFFLINE = "offline"


class PresenceReason(StrEnum):
    STATUS = "status"  # the device (or its last will) published on devices/{id}/status
    DATA = "data"  # a message arrived from a device we thought offline
    TIMEOUT = "timeout"  # nothing heard for N report intervals


class CommandStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    ACKED = "acked"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


# ---- payloads: what ``payload`` holds for each event type ------------------------------
# Published as plain dicts (no validation on the hot path); tests check what the
# platform publishes against these models, and the dashboard's types are generated
# from them (web/src/live/events.gen.ts).


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


# A moment inside a payload that describes a resource (a command, an alert): ISO 8601 in
# UTC, as the REST API shows the same resource (iotp.services.times.iso_time); only the
# envelope's ``ts`` is epoch seconds.
IsoTime = Annotated[
    str, Field(pattern=r"^\d{4}-\d{2}-\d{2}T[0-9:.]+Z$", json_schema_extra={"format": "date-time"})
]


class DeviceDataPayload(_Payload):
    metrics: dict[str, float]
    attributes: dict[str, Any]
    seq: int | None


class DeviceStatusPayload(_Payload):
    status: Presence
    previous: Presence
    reason: PresenceReason


class DeviceRegisteredPayload(_Payload):
    name: str
    type: str | None  # None until the device's info arrives
    capabilities: list[str]
    # As declared by a first info message (defaults not filled in); absent when none.
    units: dict[str, str] | None = None


class DeviceUpdatedPayload(BaseModel):
    """The fields that changed: the device's info when it reports it, the whole
    device (as GET /api/devices/{id} answers) after an edit through the API."""

    model_config = ConfigDict(extra="allow")


class DeviceDeletedPayload(_Payload):
    pass


class DeviceStatePayload(BaseModel):
    """The state the device reported, as it reported it."""

    model_config = ConfigDict(extra="allow")


class DeviceEventPayload(BaseModel):
    """The device's event name and level, and its other fields."""

    model_config = ConfigDict(extra="allow")
    event: str
    level: Literal["info", "warning", "critical"]


class CommandAckPayload(_Payload):
    id: str | None
    status: Literal["ok", "error", "progress"]
    result: Any = None
    error: str | None = None


class CommandUpdatePayload(_Payload):
    id: str
    device_id: str
    command: str
    params: dict[str, Any]
    status: CommandStatus
    source: str
    timeout: float
    created_at: IsoTime
    expires_at: IsoTime | None
    sent_at: IsoTime | None
    deadline: IsoTime | None
    finished_at: IsoTime | None
    result: Any = None
    error: str | None
    progress: Any = None
    rollout_id: int | None
    notes: list[dict[str, Any]]


class AlertPayload(_Payload):
    action: Literal["raised", "acknowledged", "cleared"]
    id: int
    key: str
    rule_id: int | None
    device_id: str | None
    name: str
    severity: Literal["info", "warning", "critical"]
    status: Literal["active", "acknowledged", "cleared"]
    message: str
    data: dict[str, Any]
    raised_at: IsoTime
    acknowledged_at: IsoTime | None
    acknowledged_by: str | None
    cleared_at: IsoTime | None
    cleared_by: str | None
    history: list[dict[str, Any]]


class NotificationPayload(_Payload):
    level: Literal["info", "warning", "critical"]
    message: str
    rule_id: int
    rule: str
    kind: str


class RuleFiredPayload(_Payload):
    """The rule's totals as stored once it fired (device id ``-``: a rule, not a device)."""

    rule_id: int
    fire_count: int
    last_fired_at: float


EVENT_PAYLOADS: dict[EventType, type[BaseModel]] = {
    EventType.DEVICE_DATA: DeviceDataPayload,
    EventType.DEVICE_STATUS: DeviceStatusPayload,
    EventType.DEVICE_REGISTERED: DeviceRegisteredPayload,
    EventType.DEVICE_UPDATED: DeviceUpdatedPayload,
    EventType.DEVICE_DELETED: DeviceDeletedPayload,
    EventType.DEVICE_STATE: DeviceStatePayload,
    EventType.DEVICE_EVENT: DeviceEventPayload,
    EventType.COMMAND_ACK: CommandAckPayload,
    EventType.COMMAND_UPDATE: CommandUpdatePayload,
    EventType.ALERT: AlertPayload,
    EventType.NOTIFICATION: NotificationPayload,
    EventType.RULE_FIRED: RuleFiredPayload,
}


class Event(BaseModel):
    """The envelope every event travels in (MQTT and the WebSocket)."""

    type: EventType
    device_id: str
    ts: float
    payload: dict[str, Any]


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

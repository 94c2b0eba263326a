"""Topic templates and the one topic parser."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field

PROTOCOL_VERSION = 1
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)
# A device id in a pydantic model.
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
TOPIC_ROOT = "devices"


class Kind(StrEnum):
    DATA = "data"
    STATUS = "status"
    INFO = "info"
    STATE = "state"
    EVENTS = "events"
    COMMANDS = "commands"
    ACK = "ack"


_KINDS = {k.value: k for k in Kind}


class TopicError(ValueError):
    def __init__(self, reason: str, topic: str) -> None:
        super().__init__(f"{reason}: {topic!r}")
        self.reason = reason
        self.topic = topic


def device_topic(device_id: str, kind: Kind) -> str:
    return f"{TOPIC_ROOT}/{device_id}/{kind.value}"


def command_topic(device_id: str) -> str:
    return device_topic(device_id, Kind.COMMANDS)


def subscription(kind: Kind, share_group: str = "") -> str:
    topic = f"{TOPIC_ROOT}/+/{kind.value}"
    return f"$share/{share_group}/{topic}" if share_group else topic


def inbound_subscription(share_group: str = "") -> str:
    """Everything under devices/: unknown topics must reach the worker to be counted."""
    topic = f"{TOPIC_ROOT}/#"
    return f"$share/{share_group}/{topic}" if share_group else topic


def parse_topic(topic: str) -> tuple[str, Kind]:
    """Split ``devices/{id}/{kind}``; raise TopicError with a rejection reason."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != TOPIC_ROOT:
        raise TopicError("bad_topic", topic)
    device_id, kind_name = parts[1], parts[2]
    kind = _KINDS.get(kind_name)
    if kind is None:
        raise TopicError("bad_topic", topic)
    if DEVICE_ID_RE.fullmatch(device_id) is None:
        raise TopicError("bad_device_id", topic)
    return device_id, kind

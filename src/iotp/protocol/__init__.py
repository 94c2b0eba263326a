"""The device protocol in code: topics, limits, payload parsing (see docs/protocol.md)."""

from iotp.protocol.payloads import (
    Ack,
    DataMessage,
    DeviceEvent,
    DeviceInfo,
    RejectedMessage,
    parse_ack,
    parse_data,
    parse_event,
    parse_info,
    parse_state,
    parse_status,
)
from iotp.protocol.topics import (
    DEVICE_ID_RE,
    PROTOCOL_VERSION,
    Kind,
    command_topic,
    device_topic,
    parse_topic,
)

__all__ = [
    "DEVICE_ID_RE",
    "PROTOCOL_VERSION",
    "Ack",
    "DataMessage",
    "DeviceEvent",
    "DeviceInfo",
    "Kind",
    "RejectedMessage",
    "command_topic",
    "device_topic",
    "parse_ack",
    "parse_data",
    "parse_event",
    "parse_info",
    "parse_state",
    "parse_status",
    "parse_topic",
]

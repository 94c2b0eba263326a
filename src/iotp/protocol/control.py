"""Control requests: an API process asks a worker to act on
``{root}/control/{dispatch,shadow,rollout}`` with ``{"devices": [...]}`` (root is the
events prefix's parent, ``iotp`` by default)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import orjson


class ControlRequest(StrEnum):
    DISPATCH = "dispatch"  # publish the queued commands of these devices
    SHADOW = "shadow"  # reconcile these devices' desired state
    ROLLOUT = "rollout"  # advance the firmware rollouts


def control_root(events_prefix: str) -> str:
    prefix = events_prefix.rstrip("/")
    parent = prefix.rpartition("/")[0]
    return f"{parent or prefix}/control"


def control_topic(events_prefix: str, what: ControlRequest) -> str:
    return f"{control_root(events_prefix)}/{what.value}"


def control_subscription(events_prefix: str, share_group: str = "") -> str:
    topic = f"{control_root(events_prefix)}/+"
    return f"$share/{share_group}/{topic}" if share_group else topic


def encode_request(device_ids: Iterable[str]) -> bytes:
    return orjson.dumps({"devices": list(device_ids)})


def parse_request(topic: str, payload: bytes) -> tuple[ControlRequest, list[str]] | None:
    """The request and its device ids; None when it cannot be read."""
    try:
        what = ControlRequest(topic.rsplit("/", 1)[-1])
        body = orjson.loads(payload)
        devices = [d for d in body.get("devices", []) if isinstance(d, str)]
    except (ValueError, AttributeError):  # orjson.JSONDecodeError is a ValueError
        return None
    return what, devices

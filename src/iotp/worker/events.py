"""Platform events: what the worker tells API instances (and, later, automations)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

# Topic for an event: f"{prefix}/{type}/{device_id}"
EventSink = Callable[[str, bytes], None]


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

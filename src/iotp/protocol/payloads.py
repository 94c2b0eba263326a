"""Payload parsing and validation at the edge.

The telemetry path is hand-written (it runs for every message, tens of thousands per
second); the rarer messages use pydantic models.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Literal, cast

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from iotp.protocol.units import MAX_UNIT_LENGTH

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_FIELDS = 64
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_TS = 1577836800.0  # 2020-01-01: earlier means the device clock is not set
MAX_FUTURE_SECONDS = 3600.0
MAX_SEQ = 2**63
RESERVED_DATA_KEYS = frozenset({"ts", "seq"})


class RejectedMessage(ValueError):
    """A message that breaks the protocol; ``reason`` is the counter label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def load_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedMessage("oversize", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        if "infinity" in text or b"NaN" in payload or b"Infinity" in payload:
            raise RejectedMessage("non_finite", text) from None
        raise RejectedMessage("bad_json", text) from None
    if not isinstance(obj, dict):
        raise RejectedMessage("not_object", type(obj).__name__)
    if len(obj) > MAX_FIELDS:
        raise RejectedMessage("too_many_fields", f"{len(obj)} > {MAX_FIELDS}")
    return obj


class DataMessage:
    """One telemetry sample, validated."""

    __slots__ = ("attributes", "metrics", "seq", "ts", "ts_replaced")

    def __init__(
        self,
        metrics: dict[str, float],
        attributes: dict[str, Any] | None,
        ts: float,
        seq: int,
        ts_replaced: bool = False,
    ) -> None:
        self.metrics = metrics
        self.attributes = attributes
        self.ts = ts
        self.seq = seq
        self.ts_replaced = ts_replaced


def parse_data(payload: bytes, received_at: float | None = None) -> DataMessage:
    obj = load_object(payload)
    now = time.time() if received_at is None else received_at
    metrics: dict[str, float] = {}
    attributes: dict[str, Any] | None = None
    ts_raw = obj.pop("ts", None)
    seq_raw = obj.pop("seq", None)
    for name, value in obj.items():
        if NAME_RE.fullmatch(name) is None:
            raise RejectedMessage("bad_name", repr(name)[:80])
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                raise RejectedMessage("non_finite", name)
            metrics[name] = value
        elif kind is int:
            metrics[name] = float(value)
        else:
            if attributes is None:
                attributes = {}
            attributes[name] = value
    if not metrics and not attributes:
        raise RejectedMessage("empty", "no metrics or attributes")
    ts_replaced = False
    if ts_raw is None:
        ts = now
    elif type(ts_raw) in (int, float):
        ts = float(ts_raw)
        if ts < MIN_TS or ts > now + MAX_FUTURE_SECONDS:
            ts = now
            ts_replaced = True
    else:
        raise RejectedMessage("bad_type", "ts must be a number")
    if seq_raw is None:
        seq = -1
    elif type(seq_raw) is int and 0 <= seq_raw < MAX_SEQ:
        seq = seq_raw
    else:
        raise RejectedMessage("bad_type", "seq must be an integer 0 <= seq < 2**63")
    return DataMessage(metrics, attributes, ts, seq, ts_replaced)


# Status values of devices built to the original design, reported around a firmware
# update: events of the device, not presence (docs/protocol.md).
UPDATE_STATUSES = frozenset({"updating", "update_success"})
STATUS_VALUES = frozenset({"online", "offline"}) | UPDATE_STATUSES
StatusValue = Literal["online", "offline", "updating", "update_success"]


def parse_status(payload: bytes) -> StatusValue:
    """``online`` / ``offline`` (presence) or an update status, as plain text or
    ``{"status": ...}``, case-insensitive."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedMessage("oversize", f"{len(payload)} bytes")
    value: Any = payload.strip().decode("utf-8", "replace")
    if value.startswith("{"):
        value = load_object(payload).get("status")
    if isinstance(value, str) and value.lower() in STATUS_VALUES:
        return cast(StatusValue, value.lower())
    raise RejectedMessage("bad_status", payload[:40].decode("utf-8", "replace"))


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class DeviceInfo(_Model):
    protocol: int = Field(default=1, ge=1)
    type: str | None = Field(default=None, max_length=64)
    firmware: str | None = Field(default=None, max_length=64)
    capabilities: list[str] = Field(default_factory=list, max_length=64)
    ip: str | None = Field(default=None, max_length=64)
    rssi: int | None = Field(default=None, ge=-200, le=50)
    interval: float | None = Field(default=None, gt=0, le=86400)
    name: str | None = Field(default=None, max_length=128)
    # metric name -> unit ("°C"); "" says the metric has no unit
    units: dict[str, str] = Field(default_factory=dict, max_length=MAX_FIELDS)

    @field_validator("interval", mode="before")
    @classmethod
    def _interval_number(cls, value: Any) -> Any:
        if type(value) is int:
            return float(value)
        return value

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, value: list[str]) -> list[str]:
        for cap in value:
            if not 1 <= len(cap) <= 64:
                raise ValueError("capability names are 1..64 characters")
        return value

    @field_validator("units")
    @classmethod
    def _units(cls, value: dict[str, str]) -> dict[str, str]:
        for name, unit in value.items():
            if NAME_RE.fullmatch(name) is None:
                raise ValueError(f"unit of {name[:80]!r}: metric names match {NAME_RE.pattern}")
            if len(unit) > MAX_UNIT_LENGTH:
                raise ValueError(f"unit of {name!r} is over {MAX_UNIT_LENGTH} characters")
        return value

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})


class Ack(_Model):
    id: str | None = Field(max_length=64)
    status: Literal["ok", "error", "progress"]
    result: Any = None
    error: str | None = Field(default=None, max_length=1024)


class DeviceEvent(_Model):
    event: str = Field(min_length=1, max_length=64)
    level: Literal["info", "warning", "critical"] = "info"
    ts: float | None = None

    @field_validator("ts", mode="before")
    @classmethod
    def _ts_number(cls, value: Any) -> Any:
        if type(value) is int:
            return float(value)
        return value

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})


def _model_error(reason: str, exc: ValidationError) -> RejectedMessage:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return RejectedMessage(reason, f"{where}: {first['msg']}")


def parse_info(payload: bytes) -> DeviceInfo:
    obj = load_object(payload)
    try:
        return DeviceInfo.model_validate(obj)
    except ValidationError as exc:
        raise _model_error("bad_info", exc) from None


def parse_state(payload: bytes) -> dict[str, Any]:
    return load_object(payload)


def parse_ack(payload: bytes) -> Ack:
    obj = load_object(payload)
    try:
        return Ack.model_validate(obj)
    except ValidationError as exc:
        raise _model_error("bad_ack", exc) from None


def parse_event(payload: bytes) -> DeviceEvent:
    obj = load_object(payload)
    try:
        return DeviceEvent.model_validate(obj)
    except ValidationError as exc:
        raise _model_error("bad_event", exc) from None

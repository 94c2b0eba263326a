"""API schemas, as a family per resource (ORM tables live in iotp.db.models)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from iotp.db.models import Device, DeviceEventRow
from iotp.protocol.units import units_for
from iotp.services.commands import known_capabilities


def iso(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class DevicePublic(BaseModel):
    id: str
    name: str
    type: str | None
    capabilities: list[str] = Field(
        description="what its info lists; while capabilities_known is false, what it has "
        "shown it has (its data's metrics, its state's relays and servo)"
    )
    # False for a device that never sent ``info``: it gets the standard commands
    # (relay, servo, reboot, custom) unchecked against what it has.
    capabilities_known: bool
    # False for a device that has never acknowledged a command (nor sent info): its
    # commands stay ``sent``, noted "device does not acknowledge".
    acks: bool
    firmware_version: str | None
    protocol: int
    ip: str | None
    rssi: int | None
    report_interval: float | None
    status: Literal["online", "offline", "unknown"]
    status_changed_at: datetime | None
    first_seen: datetime
    last_seen: datetime | None
    notes: str
    tags: list[str]
    metadata: dict[str, Any]
    reported_state: dict[str, Any] | None
    units: dict[str, str] = Field(
        description="metric -> unit: what the device declared over the known sensors' defaults"
    )

    @classmethod
    def of(cls, d: Device) -> DevicePublic:
        known = known_capabilities(d)
        return cls(
            id=d.id,
            name=d.name,
            type=d.type,
            capabilities=known if known is not None else list(d.learned_capabilities or []),
            capabilities_known=known is not None,
            acks=bool(d.acks),
            firmware_version=d.firmware_version,
            protocol=d.protocol,
            ip=d.ip,
            rssi=d.rssi,
            report_interval=d.report_interval,
            status=d.status,
            status_changed_at=iso(d.status_changed_at),
            first_seen=iso(d.first_seen),
            last_seen=iso(d.last_seen),
            notes=d.notes or "",
            tags=d.tags or [],
            metadata=d.meta or {},
            reported_state=d.reported_state,
            units=units_for(d.units),
        )


class DevicesPublic(BaseModel):
    data: list[DevicePublic]
    count: int


class DeviceUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=128)
    notes: str | None = Field(default=None, max_length=4000)
    tags: list[str] | None = Field(default=None, max_length=32)

    model_config = {"extra": "forbid"}


class LatestValue(BaseModel):
    value: float
    ts: datetime
    unit: str | None = None


class LatestPublic(BaseModel):
    device_id: str
    metrics: dict[str, LatestValue]


class FleetValue(BaseModel):
    value: float
    ts: datetime


class FleetLatestPublic(BaseModel):
    """Device id -> metric -> its latest value (devices that never reported are left out)."""

    data: dict[str, dict[str, FleetValue]]
    count: int


class Point(BaseModel):
    ts: datetime
    value: float


class BucketPoint(BaseModel):
    ts: datetime
    avg: float
    min: float
    max: float
    count: int


class TelemetryPublic(BaseModel):
    device_id: str
    since: datetime
    until: datetime
    bucket_seconds: float | None = Field(description="null: raw points; else the bucket width")
    series: dict[str, list[Point] | list[BucketPoint]]
    units: dict[str, str] = Field(
        default_factory=dict, description="unit of each series that has one"
    )


class DeviceEventPublic(BaseModel):
    id: int
    device_id: str
    ts: datetime
    type: str
    data: dict[str, Any]

    @classmethod
    def of(cls, e: DeviceEventRow) -> DeviceEventPublic:
        return cls(id=e.id, device_id=e.device_id, ts=iso(e.ts), type=e.type, data=e.data or {})


class DeviceEventsPublic(BaseModel):
    data: list[DeviceEventPublic]
    count: int


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "error"]
    mqtt: Literal["ok", "disconnected"]
    workers: int
    detail: dict[str, str] = Field(default_factory=dict)


class StatsPublic(BaseModel):
    devices_total: int
    devices_online: int
    devices_offline: int
    messages_received: int
    messages_stored: int
    messages_duplicate: int
    messages_rejected: int
    rejected_by_reason: dict[str, int]
    ingest_rate: float = Field(description="messages stored per second, all live workers")
    websocket_clients: int
    workers: int
    api_instances: int
    uptime_seconds: float


class StatsPoint(BaseModel):
    ts: datetime
    devices_total: int
    devices_online: int
    messages_per_second: float | None = Field(
        description="messages stored per second since the sample before (None: unknown)"
    )


class StatsHistoryPublic(BaseModel):
    window: Literal["1h", "24h"]
    points: list[StatsPoint]


class ActivityItem(BaseModel):
    key: str = Field(description="event:<id>, command:<id> or alert:<id>; one entry each")
    type: str = Field(description="registered, status, device_event, command or alert")
    ts: datetime = Field(description="the entry's latest change")
    device_id: str | None
    data: dict[str, Any] = Field(description="the event's data, the command or the alert")


class ActivityPublic(BaseModel):
    data: list[ActivityItem]
    count: int

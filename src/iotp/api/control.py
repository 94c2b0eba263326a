"""Device control in the API: schemas for commands, shadow, firmware, rollouts and tags,
and the few helpers the thin routes share (error mapping, asking a worker to act,
emitting command_update events, waiting for a command's end)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.api.state import ApiState
from iotp.db.models import CommandRow, FirmwareRow, RolloutDevice
from iotp.protocol.control import ControlRequest, control_topic, encode_request
from iotp.protocol.events import CommandStatus, EventType
from iotp.services import commands as command_service
from iotp.services.groups import Selector

WAIT_GRACE_SECONDS = 1.0


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- commands -------------------------------------------------------------------------


class CommandCreate(_In):
    command: str = Field(min_length=1, max_length=64, examples=["relay"])
    params: dict[str, Any] = Field(
        default_factory=dict, examples=[{"name": "light", "state": "on"}]
    )
    timeout: float = Field(
        default=command_service.DEFAULT_TIMEOUT,
        ge=0.1,
        le=command_service.MAX_TIMEOUT,
        description="seconds from sending to the final ack before the command times out",
    )
    ttl: float = Field(
        default=command_service.DEFAULT_TTL,
        ge=0,
        le=command_service.MAX_TTL,
        description="seconds a command waits for an offline device before it expires",
    )


class SelectorIn(_In):
    devices: list[str] = Field(default_factory=list, max_length=10_000)
    type: str | None = Field(default=None, max_length=64)
    tags: list[str] = Field(default_factory=list, max_length=32, description="all must match")
    all: bool = Field(default=False, description="the whole fleet (must be said explicitly)")
    online_only: bool = False

    def to_selector(self) -> Selector:
        return Selector(
            devices=list(self.devices),
            type=self.type,
            tags=list(self.tags),
            all=self.all,
            online_only=self.online_only,
        )


class BulkCommandCreate(CommandCreate):
    selector: SelectorIn


class CommandPublic(BaseModel):
    id: str
    device_id: str
    command: str
    params: dict[str, Any]
    status: CommandStatus
    source: str
    timeout: float
    created_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    deadline: datetime | None
    finished_at: datetime | None
    result: Any
    error: str | None
    progress: dict[str, Any] | None
    rollout_id: int | None
    notes: list[dict[str, Any]]

    @classmethod
    def of(cls, data: dict[str, Any]) -> CommandPublic:
        return cls.model_validate(data)


class CommandsPublic(BaseModel):
    data: list[CommandPublic]
    count: int


class BulkResult(BaseModel):
    device_id: str
    ok: bool
    command: CommandPublic | None = None
    error: str | None = None


class BulkPublic(BaseModel):
    data: list[BulkResult]
    count: int
    created: int
    rejected: int
    by_status: dict[str, int]


class CommandStatsPublic(BaseModel):
    by_status: dict[str, int]
    counters: dict[str, int] = Field(description="acks and dispatch counters, all workers")


# ---- shadow ---------------------------------------------------------------------------


class ShadowUpdate(_In):
    desired: dict[str, Any] = Field(
        examples=[{"relays": {"light": True}, "servo": 90, "automation": {"fan_temp_on": 29}}]
    )


class ShadowPublic(BaseModel):
    device_id: str
    desired: dict[str, Any]
    reported: dict[str, Any]
    delta: dict[str, Any]
    in_sync: bool
    version: int
    updated_at: datetime | None
    attempts: int
    last_error: str | None


# ---- firmware and rollouts ------------------------------------------------------------


class FirmwarePublic(BaseModel):
    id: int
    version: str
    device_type: str | None
    notes: str
    size: int
    sha256: str
    key_id: str | None = Field(description="id of the Ed25519 key that signed it; null: unsigned")
    next_key_id: str | None = Field(
        description="id of the key this bundle rotates devices to, if any"
    )
    created_at: datetime
    download_path: str

    @classmethod
    def of(cls, row: FirmwareRow) -> FirmwarePublic:
        return cls(
            id=row.id,
            version=row.version,
            device_type=row.device_type or None,
            notes=row.notes,
            size=row.size,
            sha256=row.sha256,
            key_id=row.key_id,
            next_key_id=row.next_key_id,
            created_at=datetime.fromtimestamp(row.created_at, UTC),
            download_path=f"/api/firmware/{row.id}/download",
        )


class FirmwaresPublic(BaseModel):
    data: list[FirmwarePublic]
    count: int


class RolloutCreate(_In):
    firmware_id: int
    selector: SelectorIn
    rate_per_minute: float = Field(default=60.0, gt=0, le=100_000)
    failure_threshold: float = Field(
        default=0.2, gt=0, le=1, description="pause when this fraction of devices has failed"
    )
    timeout: float = Field(default=600.0, ge=10, le=3600, description="per device, seconds")
    base_url: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^https?://",
        description="how devices reach this API (default: the URL of this request)",
    )
    allow_unsigned: bool = Field(
        default=False, description="start even though the bundle is unsigned (admins only)"
    )
    allow_downgrade: bool = Field(
        default=False, description="let devices install a version older than the one they run"
    )


class RolloutDevicePublic(BaseModel):
    device_id: str
    status: str
    command_id: str | None
    stage: str | None
    error: str | None
    from_version: str | None
    updated_at: datetime

    @classmethod
    def of(cls, row: RolloutDevice) -> RolloutDevicePublic:
        return cls.model_validate(
            {
                "device_id": row.device_id,
                "status": row.status,
                "command_id": row.command_id,
                "stage": row.stage,
                "error": row.error,
                "from_version": row.from_version,
                "updated_at": row.updated_at,
            }
        )


class RolloutPublic(BaseModel):
    id: int
    firmware_id: int
    version: str
    sha256: str
    size: int
    download_url: str = Field(
        description="the bundle's URL; each device's ota command carries it signed for that "
        "device and command, valid while the command is open"
    )
    status: str
    selector: dict[str, Any]
    rate_per_minute: float
    failure_threshold: float
    timeout: float
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    paused_reason: str | None
    key_id: str | None
    allow_unsigned: bool
    allow_downgrade: bool
    devices_total: int
    counts: dict[str, int]
    devices: list[RolloutDevicePublic] | None = None


class RolloutsPublic(BaseModel):
    data: list[RolloutPublic]
    count: int


class TagPublic(BaseModel):
    tag: str
    count: int


class TagEdit(_In):
    add: list[str] = Field(default_factory=list, max_length=10_000)
    remove: list[str] = Field(default_factory=list, max_length=10_000)


class TagEditPublic(BaseModel):
    tag: str
    changed: int
    unknown_devices: list[str]


# ---- helpers --------------------------------------------------------------------------


def request(state: ApiState, what: ControlRequest, device_ids: list[str]) -> None:
    """Ask a worker to act."""
    topic = control_topic(state.events_prefix, what)
    state.link.publish(topic, encode_request(device_ids), qos=1)


def publisher(state: ApiState) -> str | None:
    """This process's claim id when it can publish commands itself (link up), else None
    (the command is queued for a worker)."""
    return state.command_sender.owner if state.link.is_connected else None


def send_claimed(state: ApiState, rows: list[CommandRow]) -> None:
    """Publish commands this process claimed at creation (``sending``, committed): in the
    background, so the response does not wait for the broker's PUBACK. Should this
    process die first, the claims go stale and a worker publishes them."""
    if not rows:
        return
    task = asyncio.create_task(state.command_sender.send(rows))
    state.command_sends.add(task)
    task.add_done_callback(state.command_sends.discard)


def dispatch(state: ApiState, rows: list[CommandRow]) -> None:
    """See that committed new commands are published: those this process claimed
    (``sending``) from here, the others (``queued``: device offline, or the link down) by
    a worker."""
    send_claimed(state, [row for row in rows if row.status == CommandStatus.SENDING])
    queued = sorted({row.device_id for row in rows if row.status == CommandStatus.QUEUED})
    if queued:
        request(state, ControlRequest.DISPATCH, queued)


def emit(state: ApiState, command: dict[str, Any], ts: float) -> None:
    state.publish_event(EventType.COMMAND_UPDATE, command["device_id"], command, ts)


async def wait_for_end(
    state: ApiState,
    session: AsyncSession,
    futures: dict[str, asyncio.Future[dict[str, Any]]],
    *,
    seconds: float,
) -> dict[str, dict[str, Any]]:
    """Final states as they arrive; after ``seconds``, whatever the database says."""
    out: dict[str, dict[str, Any]] = {}
    try:
        if futures:
            done, _ = await asyncio.wait(futures.values(), timeout=seconds)
            for cid, fut in futures.items():
                if fut in done and not fut.cancelled():
                    out[cid] = fut.result()
    finally:
        state.command_waiters.forget(futures)
    for cid in futures:
        if cid not in out:
            row = await session.get(CommandRow, cid, populate_existing=True)
            if row is not None:
                out[cid] = command_service.to_dict(row)
    return out

"""Devices, their latest values, history and events."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Response, status

from iotp.api.deps import SessionDep, StateDep
from iotp.api.schemas import (
    DeviceEventPublic,
    DeviceEventsPublic,
    DevicePublic,
    DevicesPublic,
    DeviceUpdate,
    FleetLatestPublic,
    LatestPublic,
    LatestValue,
    TelemetryPublic,
    iso,
)
from iotp.errors import InvalidRequestError
from iotp.protocol.events import EventType
from iotp.protocol.payloads import NAME_RE
from iotp.protocol.units import units_for
from iotp.services import devices as device_service
from iotp.services import telemetry

router = APIRouter(prefix="/api/devices", tags=["devices"])
# Beside the devices, not under them: a device may be called "latest".
fleet_router = APIRouter(tags=["devices"])
MAX_LATEST_IDS = 1000

# Query budgets: what one request may ask of the database (HTTP 422 beyond, naming the
# limit). Raw points are counted over every series of the request together.
MAX_METRICS_PER_REQUEST = 50
MAX_POINTS_PER_REQUEST = 100_000
MIN_BUCKET_SECONDS = 1.0


def _parse_time(value: str | None, default: float, name: str) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{name} must be an ISO 8601 time or epoch seconds, got {value!r}",
        ) from None
    if parsed.tzinfo is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name} must include a time zone (e.g. Z)"
        )
    return parsed.timestamp()


async def _device_or_404(session: SessionDep, device_id: str) -> None:
    await _units_or_404(session, device_id)


async def _units_or_404(session: SessionDep, device_id: str) -> dict[str, str]:
    """The device's units (declared over the defaults); NotFoundError (404) for an
    unknown device."""
    return units_for((await device_service.get(session, device_id)).units)


@router.get("", response_model=DevicesPublic)
async def list_devices(
    session: SessionDep,
    status_: Annotated[
        Literal["online", "offline", "unknown"] | None, Query(alias="status")
    ] = None,
    type_: Annotated[str | None, Query(alias="type", max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=128, description="search name or id")] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DevicesPublic:
    devices, total = await device_service.list_devices(
        session, status=status_, type_=type_, search=q, tag=tag, limit=limit, offset=offset
    )
    return DevicesPublic(data=[DevicePublic.of(d) for d in devices], count=total)


@router.get("/{device_id}", response_model=DevicePublic)
async def get_device(session: SessionDep, device_id: str) -> DevicePublic:
    return DevicePublic.of(await device_service.get(session, device_id))


@router.patch("/{device_id}", response_model=DevicePublic)
async def update_device(
    session: SessionDep, state: StateDep, device_id: str, body: DeviceUpdate
) -> DevicePublic:
    if body.tags is not None:
        for tag in body.tags:
            if NAME_RE.fullmatch(tag) is None:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                    f"tag {tag!r} must match {NAME_RE.pattern}",
                )
    device = await device_service.update_device(
        session, device_id=device_id, name=body.name, notes=body.notes, tags=body.tags
    )
    await session.commit()
    public = DevicePublic.of(device)
    state.publish_event(EventType.DEVICE_UPDATED, device_id, public.model_dump(mode="json"))
    return public


@router.delete("/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_device(session: SessionDep, state: StateDep, device_id: str) -> Response:
    await device_service.delete_device(session, device_id=device_id)
    await session.commit()
    state.publish_event(EventType.DEVICE_DELETED, device_id, {})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{device_id}/latest", response_model=LatestPublic)
async def latest(session: SessionDep, device_id: str) -> LatestPublic:
    units = await _units_or_404(session, device_id)
    values = await telemetry.latest_values(await session.connection(), device_id=device_id)
    return LatestPublic(
        device_id=device_id,
        metrics={
            k: LatestValue(value=v["value"], ts=iso(v["ts"]), unit=units.get(k))
            for k, v in values.items()
        },
    )


@fleet_router.get("/api/latest", response_model=FleetLatestPublic)
async def fleet_latest(
    session: SessionDep,
    devices: Annotated[
        str | None,
        Query(description="comma-separated device ids (default: every device)", max_length=70_000),
    ] = None,
) -> FleetLatestPublic | Response:
    """The latest value of each metric of every device at once (the device list's
    "Latest" column): what ``/api/devices/{id}/latest`` gives one device, without units
    (each device's ``units`` has them)."""
    ids = None
    if devices is not None:
        ids = [d for d in devices.split(",") if d]
        if len(ids) > MAX_LATEST_IDS:
            raise InvalidRequestError(f"at most {MAX_LATEST_IDS} device ids")
    fleet = await telemetry.latest_of_fleet(await session.connection(), device_ids=ids)
    # Encoded straight from the rows, as the charts are: thousands of values.
    data = {
        device_id: {
            name: {"value": float(v["value"]), "ts": iso(v["ts"])} for name, v in metrics.items()
        }
        for device_id, metrics in fleet.items()
    }
    return Response(
        orjson.dumps({"data": data, "count": len(data)}, option=orjson.OPT_UTC_Z),
        media_type="application/json",
    )


@router.get(
    "/{device_id}/telemetry",
    response_model=TelemetryPublic,
    responses={200: {"content": {"text/csv": {}}}},
)
async def history(
    session: SessionDep,
    device_id: str,
    metric: Annotated[
        list[str] | None, Query(description="metric name; repeat for several; default all")
    ] = None,
    since: Annotated[str | None, Query(description="ISO 8601 or epoch s; default 1 h ago")] = None,
    until: Annotated[str | None, Query(description="ISO 8601 or epoch s; default now")] = None,
    bucket: Annotated[
        str | None,
        Query(description="omit for raw points; seconds, or 'auto' for <= 1000 buckets"),
    ] = None,
    format_: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> TelemetryPublic | Response:
    units = await _units_or_404(session, device_id)
    now = time.time()
    until_ts = _parse_time(until, now, "until")
    since_ts = _parse_time(since, until_ts - 3600, "since")
    if since_ts >= until_ts:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since must be before until")
    bucket_s: float | None
    if bucket is None or bucket == "":
        bucket_s = None
    elif bucket == "auto":
        bucket_s = telemetry.auto_bucket(since_ts, until_ts)
    else:
        try:
            bucket_s = float(bucket)
        except ValueError:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "bucket must be seconds or 'auto'"
            ) from None
        if not bucket_s >= MIN_BUCKET_SECONDS or bucket_s != bucket_s or bucket_s > 365 * 86400:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "bucket must be 1 s .. 365 days"
            )
    conn = await session.connection()
    names = list(dict.fromkeys(metric or await telemetry.metric_names(conn, device_id=device_id)))
    if len(names) > MAX_METRICS_PER_REQUEST:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"at most {MAX_METRICS_PER_REQUEST} metrics per request ({len(names)} asked);"
            " ask for fewer metric= names",
        )
    for name in names:
        if NAME_RE.fullmatch(name) is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"metric {name!r} must match {NAME_RE.pattern}",
            )
    raw: dict[str, list[dict[str, float | int]]] = {}
    if bucket_s is not None:
        raw = await telemetry.query_buckets(
            conn,
            device_id=device_id,
            metrics=names,
            since=since_ts,
            until=until_ts,
            bucket=bucket_s,
            limit=MAX_POINTS_PER_REQUEST + 1,
        )
    else:
        budget = MAX_POINTS_PER_REQUEST + 1
        for name in names:
            raw[name] = await telemetry.query_series(
                conn,
                device_id=device_id,
                metric=name,
                since=since_ts,
                until=until_ts,
                bucket=None,
                limit=budget,
            )
            budget -= len(raw[name])
            if budget <= 0:  # over the limit already: the answer is refused below
                break
    if sum(len(rows) for rows in raw.values()) > MAX_POINTS_PER_REQUEST:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the answer would exceed {MAX_POINTS_PER_REQUEST} points; ask for a shorter"
            " time range, fewer metrics, or buckets (bucket=auto)",
        )
    if format_ == "csv":
        return _csv(device_id, raw, units, bucketed=bucket_s is not None)
    return telemetry_json(
        device_id,
        since_ts,
        until_ts,
        bucket_s,
        raw,
        units={n: units[n] for n in names if n in units},
    )


def telemetry_json(
    device_id: str,
    since: float,
    until: float,
    bucket: float | None,
    raw: dict[str, list[dict[str, float | int]]],
    units: dict[str, str],
) -> Response:
    """TelemetryPublic, encoded straight from the rows: a year's chart has thousands of
    points, and building a model for each, then having FastAPI validate them all again,
    cost more than the query (tests/unit/test_telemetry_json.py holds it to the model's
    own encoding)."""
    series: dict[str, list[dict[str, Any]]] = {}
    # The metrics of a chart share their bucket times: each is converted once.
    stamps: dict[float, datetime | None] = {}

    def stamp(ts: float) -> datetime | None:
        when = stamps.get(ts)
        if when is None:
            when = stamps[ts] = iso(ts)
        return when

    for name, rows in raw.items():
        if bucket is None:
            series[name] = [{"ts": iso(r["ts"]), "value": float(r["value"])} for r in rows]
        else:
            series[name] = [
                {
                    "ts": stamp(r["ts"]),
                    "avg": float(r["avg"]),
                    "min": float(r["min"]),
                    "max": float(r["max"]),
                    "count": int(r["count"]),
                }
                for r in rows
            ]
    body = {
        "device_id": device_id,
        "since": iso(since),
        "until": iso(until),
        "bucket_seconds": None if bucket is None else float(bucket),
        "series": series,
        "units": units,
    }
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json")


def _csv(
    device_id: str,
    raw: dict[str, list[dict[str, float | int]]],
    units: dict[str, str],
    *,
    bucketed: bool,
) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    cols = ["avg", "min", "max", "count"] if bucketed else ["value"]
    # One row per point (long format), so the unit is a column: "" where there is none.
    writer.writerow(["device_id", "metric", "unit", "time", *cols])
    for name, rows in raw.items():
        unit = units.get(name, "")
        for r in rows:
            when = iso(float(r["ts"]))
            writer.writerow(
                [device_id, name, unit, when.isoformat() if when else "", *(r[c] for c in cols)]
            )
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{device_id}.csv"'},
    )


@router.get("/{device_id}/events", response_model=DeviceEventsPublic)
async def events(
    session: SessionDep,
    device_id: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[str | None, Query(description="ISO 8601 or epoch s")] = None,
) -> DeviceEventsPublic:
    await _device_or_404(session, device_id)
    before_ts = _parse_time(before, 0, "before") if before else None
    rows = await device_service.list_events(
        session, device_id=device_id, limit=limit, before=before_ts
    )
    return DeviceEventsPublic(data=[DeviceEventPublic.of(e) for e in rows], count=len(rows))

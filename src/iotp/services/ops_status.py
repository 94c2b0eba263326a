"""`iotp status`: what the platform is doing, from the database every component writes
its counters to (component_stats), so it works from any machine that reaches it."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from iotp.db.engine import make_engine, make_sessionmaker
from iotp.services import devices as device_service
from iotp.services import retention
from iotp.services import stats as stats_service
from iotp.settings import Settings


async def read_status(settings: Settings) -> dict[str, Any]:
    engine = make_engine(settings.effective_database_url)
    now = time.time()
    try:
        async with make_sessionmaker(engine)() as session:
            rows = await stats_service.load(session)
            by_status = await device_service.count_by_status(session)
            fleet = await stats_service.fleet(session, now)
            components = [
                {
                    "id": r.component_id,
                    "kind": r.kind,
                    "live": now - r.updated_at <= stats_service.LIVE_WINDOW_SECONDS,
                    "seen_seconds_ago": round(now - r.updated_at, 1),
                    "mqtt_connected": bool((r.data or {}).get("mqtt_connected")),
                    "pending_rows": (r.data or {}).get("pending_rows"),
                    "rate": (r.data or {}).get("rate"),
                }
                for r in sorted(rows, key=lambda r: (r.kind, r.component_id))
            ]
            conn = await session.connection()
            storage: dict[str, Any] = {"partitioned": await retention.is_partitioned(conn)}
            if storage["partitioned"]:
                storage["partitions"] = len(await retention.partitions(conn))
            mark = await retention.get_state(conn, retention.WATERMARK_1M)
            storage["rollup_lag_seconds"] = None if mark is None else round(now - mark, 1)
            storage["telemetry_rows_estimate"] = await _estimate_rows(conn)
    finally:
        await engine.dispose()
    return {
        "devices": {"total": sum(by_status.values()), **by_status},
        "fleet": fleet,
        "components": components,
        "storage": storage,
    }


async def _estimate_rows(conn: Any) -> int | None:
    if conn.dialect.name == "postgresql":
        value = await conn.scalar(
            text(
                "SELECT sum(c.reltuples)::bigint FROM pg_class c JOIN pg_inherits i "
                "ON i.inhrelid = c.oid JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE p.relname = 'telemetry'"
            )
        )
        if value is None:
            value = await conn.scalar(
                text("SELECT reltuples::bigint FROM pg_class WHERE relname = 'telemetry'")
            )
        return None if value is None else max(int(value), 0)
    return int(await conn.scalar(text("SELECT count(*) FROM telemetry")) or 0)


def render_status(data: dict[str, Any]) -> str:
    d, f, s = data["devices"], data["fleet"], data["storage"]
    lines = [
        f"devices     {d['total']} total, {d.get('online', 0)} online, "
        f"{d.get('offline', 0)} offline",
        f"ingest      {f['ingest_rate']} rows/s; received {f['messages_received']}, "
        f"stored {f['messages_stored']}, duplicates {f['messages_duplicate']}, "
        f"rejected {f['messages_rejected']} {f['rejected_by_reason'] or ''}".rstrip(),
        f"processes   {f['workers']} worker(s), {f['api_instances']} API(s) live; "
        f"{f['websocket_clients']} WebSocket client(s)",
        f"storage     partitioned={s['partitioned']}"
        + (f" ({s['partitions']} partitions)" if s.get("partitions") else "")
        + f", ~{s['telemetry_rows_estimate']} raw rows, rollup lag "
        + ("n/a" if s["rollup_lag_seconds"] is None else f"{s['rollup_lag_seconds']} s"),
    ]
    for c in data["components"]:
        state = "live" if c["live"] else f"gone ({c['seen_seconds_ago']} s)"
        extra = ""
        if c["kind"] == "worker":
            extra = f", {c['rate']} rows/s, {c['pending_rows']} pending"
        mqtt = "mqtt ok" if c["mqtt_connected"] else "mqtt DOWN"
        lines.append(f"  {c['kind']:<7} {c['id']:<40} {state}, {mqtt}{extra}")
    return "\n".join(lines)

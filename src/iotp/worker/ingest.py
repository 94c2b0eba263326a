"""The ingest pipeline, independent of the MQTT client so tests can inject messages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from iotp.db.models import Device, IngestCount
from iotp.protocol import Kind, RejectedMessage, parse_topic, secrets
from iotp.protocol import payloads as p
from iotp.protocol.events import Presence
from iotp.protocol.topics import TopicError
from iotp.ratelimit import REJECT_REASON as REJECT_RATE_LIMITED
from iotp.ratelimit import DeviceRateLimiter
from iotp.services import devices as device_service
from iotp.services import rollouts as rollout_service
from iotp.services import telemetry
from iotp.services.devices import NewDevice
from iotp.settings import Settings
from iotp.worker.batcher import TelemetryBatcher
from iotp.worker.leader import refresh_from_database  # operations
from iotp.worker.presence import PresenceTracker, Transition

if TYPE_CHECKING:
    from iotp.worker.automations import Automations
    from iotp.worker.control import ControlPlane

log = logging.getLogger(__name__)

JOB_GROUP_MAX = 500
Publish = Callable[[str, str, dict[str, Any], float], None]  # (type, device_id, payload, ts)
Event = tuple[str, str, dict[str, Any], float]  # what Publish takes
# A control-plane write. It may return events: they are announced once its transaction
# has committed, and never if it rolls back (then the job runs again and returns them
# again), so a write retried or replayed is still announced exactly once.
Job = Callable[[AsyncSession], Awaitable[list[Event] | None]]


@dataclass(frozen=True)
class IngestHooks:
    """What the ingest path hands on, fixed when the worker is composed
    (worker/service.py). Each is optional: the pipeline alone (tests) runs without."""

    # Device control: acks, online transitions and reported state go to the command
    # dispatcher and the shadow reconciler.
    control: ControlPlane | None = None
    # Automations: the rule engine sees every telemetry message.
    rules: Automations | None = None
    # Adapters: a command for a mapped device goes out in its firmware's form.
    on_command: Callable[[str, bytes], Awaitable[None] | None] | None = None
    # Metrics: every stored batch, (rows, seconds).
    on_batch: Callable[[int, float], None] | None = None


class PresenceOwnership:
    """Whether this worker records presence transitions. With several workers only the
    leader does (worker/leader.py): the worker calls ``take``/``release`` as leadership
    moves, and the ingest path and the metrics read ``owned``."""

    def __init__(self, owned: bool = True) -> None:
        self._owned = owned

    @property
    def owned(self) -> bool:
        return self._owned

    def take(self) -> None:
        self._owned = True

    def release(self) -> None:
        self._owned = False


class IngestCounters:
    def __init__(self) -> None:
        self.received = 0
        self.stored = 0
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self.ts_replaced = 0
        self.batches = 0
        self.last_batch_rows = 0
        self.last_batch_seconds = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": dict(self.rejected),
            "ts_replaced": self.ts_replaced,
            "batches": self.batches,
            "last_batch_rows": self.last_batch_rows,
            "last_batch_ms": round(self.last_batch_seconds * 1000, 2),
        }

    def restore(self, data: dict[str, Any], committed: IngestCount | None) -> None:
        """``data``: the last published stats; ``committed``: the stored and duplicate
        counts written with the rows (exact, unlike the periodically published stats)."""
        self.received = int(data.get("received", 0))
        self.stored = committed.stored if committed else 0
        self.duplicates = committed.duplicates if committed else 0
        self.rejected = Counter({k: int(v) for k, v in (data.get("rejected") or {}).items()})
        self.ts_replaced = int(data.get("ts_replaced", 0))
        self.batches = int(data.get("batches", 0))


class RejectLog:
    """Logs a rejection reason at most once per interval, with how many were suppressed."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def log(self, reason: str, topic: str, detail: str) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -1e9) >= self.interval:
            extra = self._suppressed.pop(reason, 0)
            more = f" (+{extra} more since last report)" if extra else ""
            log.warning("rejected message on %r: %s %s%s", topic[:200], reason, detail[:200], more)
            self._last[reason] = now
        else:
            self._suppressed[reason] += 1


class Ingestor:
    """Handles every inbound device message. ``handle`` returns once the message's
    effect is durably stored, which is when its QoS 1 PUBACK may be sent."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        settings: Settings,
        publish: Publish,
        component_id: str | None = None,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        hooks: IngestHooks | None = None,
        ownership: PresenceOwnership | None = None,
    ) -> None:
        self.engine = engine
        # Stored and duplicate rows are counted under this id in the batch's own
        # transaction (ingest_counts); None counts nothing (tests of the pipeline alone).
        self.component_id = component_id
        self.settings = settings
        # Shared with the worker's other parts when it passes its own.
        self.sessions = sessions or async_sessionmaker(engine, expire_on_commit=False)
        self.publish = publish
        self.counters = IngestCounters()
        self.presence = PresenceTracker(
            missed_reports=settings.offline_missed_reports,
            min_timeout=settings.offline_min_seconds,
        )
        self.batcher = TelemetryBatcher(
            self._store_rows,
            max_rows=settings.batch_max_rows,
            max_delay=settings.batch_max_delay_ms / 1000,
            retry_max=settings.store_retry_max_seconds,
            on_stored=self._on_stored,
        )
        self.reject_log = RejectLog(settings.reject_log_interval_seconds)
        self.rate_limiter = DeviceRateLimiter.from_settings(settings)  # security
        self.known: set[str] = set()
        # Devices whose capabilities are unknown (no info), with what they have shown so
        # far: a data metric or state relay not in here is recorded (learn_capabilities).
        self._learning: dict[str, frozenset[str]] = {}
        self._registering: dict[str, asyncio.Future[None]] = {}
        self._info_seen: dict[str, bytes] = {}
        self._dirty_seen: dict[str, float] = {}
        self._jobs: asyncio.Queue[tuple[Job | NewDevice, asyncio.Future[None]]] = asyncio.Queue()
        hooks = hooks or IngestHooks()
        self.control = hooks.control
        self.rules = hooks.rules
        self.on_command = hooks.on_command
        self.on_batch = hooks.on_batch
        self.ownership = ownership or PresenceOwnership()

    # ---- lifecycle -------------------------------------------------------------

    async def load(self) -> None:
        """Warm the caches from the database (after a restart)."""
        async with self.sessions() as session:
            rows = await session.execute(
                Device.__table__.select().with_only_columns(
                    Device.id,
                    Device.status,
                    Device.last_seen,
                    Device.report_interval,
                    Device.capabilities,
                    Device.firmware_version,
                    Device.learned_capabilities,
                )
            )
            for device_id, status, last_seen, interval, caps, firmware, learned in rows:
                self.known.add(device_id)
                if not caps and firmware is None:
                    self._learning[device_id] = frozenset(learned or ())
                self.presence.load(
                    device_id,
                    Presence(status) if status in Presence._value2member_map_ else Presence.UNKNOWN,
                    last_seen or 0.0,
                    interval or self.settings.default_report_interval,
                )

    async def run_jobs(self) -> None:
        """The control-plane writer: registrations, info, state, presence, events, in
        order. Jobs queued together share one transaction (a fleet of 1,000 devices
        connecting at once is a few transactions, not thousands)."""
        while True:
            group = [await self._jobs.get()]
            while len(group) < JOB_GROUP_MAX and not self._jobs.empty():
                group.append(self._jobs.get_nowait())
            if not await self._run_group(group, retry=len(group) == 1):
                for one in group:  # isolate the job that fails; the others go through
                    await self._run_group([one], retry=True)
            for _, done in group:
                if not done.done():
                    done.set_result(None)

    async def _run_group(
        self, group: list[tuple[Job | NewDevice, asyncio.Future[None]]], retry: bool
    ) -> bool:
        delay = 0.05
        while True:
            try:
                async with self.sessions.begin() as session:
                    events = await self._write_group(session, [job for job, _ in group])
            except Exception as exc:  # noqa: BLE001 - retried; never dropped
                log.warning("control write failed (%s: %s); retrying", type(exc).__name__, exc)
                if not retry:
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.store_retry_max_seconds)
                continue
            # Committed: now (and only now) announce what it changed.
            for event in events:
                try:
                    self.publish(*event)
                except Exception:
                    log.exception("announcing %s for %s failed", event[0], event[1])
            return True

    async def _write_group(self, session: AsyncSession, jobs: list[Job | NewDevice]) -> list[Event]:
        """Run the jobs in order in one transaction; consecutive registrations become one
        bulk insert. Returns the events to announce after the commit."""
        events: list[Event] = []
        new: list[NewDevice] = []
        for job in [*jobs, None]:
            if isinstance(job, NewDevice):
                new.append(job)
                continue
            if new:
                created = await device_service.register_many(session, new)
                for r in created:
                    payload: dict[str, Any] = {
                        "name": r.name,
                        "type": r.type,
                        "capabilities": r.capabilities,
                    }
                    if r.units is not None:  # the rule engine reads them (alert texts)
                        payload["units"] = r.units
                    events.append(("device_registered", r.device_id, payload, r.first_seen))
                # Registered already (by another worker, or before this one forgot it): an
                # info that came with the first sighting is applied like any other.
                done = {r.device_id for r in created}
                for n in new:
                    if n.info is not None and n.device_id not in done:
                        done.add(n.device_id)
                        events.append(await _apply_info(session, n.device_id, n.info, n.now))
                new = []
            if job is not None:
                events.extend(await job(session) or ())
        return events

    def submit(self, job: Job) -> asyncio.Future[None]:
        """Queue a write for the control-plane writer (in order, retried)."""
        return self._submit(job)

    def _submit(self, job: Job | NewDevice) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait((job, done))
        return done

    async def drain(self) -> None:
        """Wait until every job queued so far has been written."""
        await self._submit(_noop)

    # ---- the hot path --------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> Awaitable[None] | None:
        """Handle one message. Returns None when nothing is left to do, or an awaitable
        that completes once the message's effect is durable (then its PUBACK may go).
        Telemetry from known devices never leaves this function: it returns the future
        of the batch its row joined."""
        now = time.time()
        try:
            device_id, kind = parse_topic(topic)
            if kind is Kind.COMMANDS:
                # The platform's own outbound topic: seen, not counted; a mapped device's
                # command is translated for its firmware (worker/adapters.py).
                return self.on_command(device_id, payload) if self.on_command else None
            self.counters.received += 1
            if self.rate_limiter and not self.rate_limiter.allow(device_id, now):  # security:
                self.reject(REJECT_RATE_LIMITED, topic, device_id)  # iotp/ratelimit.py
                return None
            if kind is Kind.DATA:
                msg = p.parse_data(payload, now)
                if msg.ts_replaced:
                    self.counters.ts_replaced += 1
                row = telemetry.make_row(device_id, msg.ts, msg.seq, msg.metrics, msg.attributes)
                if device_id not in self.known:
                    return self._data_from_new_device(device_id, row, now, msg.metrics, msg.ts)
                self._seen(device_id, now)
                learned = self._learning.get(device_id)
                # Mostly the same names as before: a set comparison in C, no new set.
                if learned is not None and not msg.metrics.keys() <= learned:
                    self._learn(device_id, device_service.capabilities_in_data(msg.metrics), now)
                if self.rules is not None:  # in-memory only
                    self.rules.on_data(device_id, msg.metrics, msg.ts)
                return self.batcher.add(row)
            if kind is Kind.STATUS:
                status = p.parse_status(payload)
                if status in p.UPDATE_STATUSES:
                    return self._on_update_status(device_id, status, now)
                return self._on_status(device_id, status == "online", now)
            if kind is Kind.INFO:
                return self._on_info(device_id, p.parse_info(payload), payload, now)
            if kind is Kind.STATE:
                return self._on_state(device_id, p.parse_state(payload), now)
            if kind is Kind.EVENTS:
                return self._on_device_event(device_id, p.parse_event(payload), now)
            return self._on_ack(device_id, p.parse_ack(payload), now)
        except RejectedMessage as exc:
            self.reject(exc.reason, topic, str(exc))
        except TopicError as exc:
            self.counters.received += 1
            self.reject(exc.reason, topic, str(exc))
        return None

    async def _data_from_new_device(
        self,
        device_id: str,
        row: telemetry.Row,
        now: float,
        metrics: dict[str, float],
        ts: float,
    ) -> None:
        await self._register(device_id, now)
        self._seen(device_id, now)
        if device_id in self._learning:
            self._learn(device_id, device_service.capabilities_in_data(metrics), now)
        if self.rules is not None:  # a new device's first sample too
            self.rules.on_data(device_id, metrics, ts)
        await self.batcher.add(row)

    def reject(self, reason: str, topic: str, detail: str) -> None:
        self.counters.rejected[reason] += 1
        self.reject_log.log(reason, topic, detail)

    def _on_stored(self, rows: int, inserted: int, seconds: float) -> None:
        self.counters.stored += inserted
        self.counters.duplicates += rows - inserted
        self.counters.batches += 1
        self.counters.last_batch_rows = rows
        self.counters.last_batch_seconds = seconds
        if self.on_batch is not None:  # operations: metrics
            self.on_batch(rows, seconds)

    async def _store_rows(self, rows: list[telemetry.Row]) -> int:
        return await telemetry.insert_rows(self.engine, rows, counted_as=self.component_id)

    # ---- presence ----------------------------------------------------------------

    def _seen(self, device_id: str, now: float) -> None:
        self._dirty_seen[device_id] = now
        transition = self.presence.seen(device_id, now)
        if transition is not None:
            self._record_transition(transition)

    def _record_transition(self, t: Transition) -> asyncio.Future[None]:
        if not self.ownership.owned:  # operations: another worker owns presence
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

        async def job(session: AsyncSession) -> list[Event]:
            await device_service.set_status(
                session,
                device_id=t.device_id,
                status=t.new.value,
                reason=t.reason.value,
                now=t.ts,
                old=t.old.value,
            )
            payload = {"status": t.new.value, "previous": t.old.value, "reason": t.reason.value}
            return [("device_status", t.device_id, payload, t.ts)]

        done = self._submit(job)
        if self.control is not None and t.new is Presence.ONLINE:  # device control
            self.control.on_online(t.device_id)
        return done

    async def refresh_presence(self, now: float) -> None:
        """Several workers share the fleet: take the sightings the others stored, so a
        device heard elsewhere is not called offline here, and record who came back."""
        for transition in await refresh_from_database(self.sessions, self.presence, now):
            self._record_transition(transition)

    def expire(self, now: float | None = None) -> list[Transition]:
        if not self.ownership.owned:  # operations: another worker owns presence
            return []
        transitions = self.presence.expire(time.time() if now is None else now)
        for t in transitions:
            self._record_transition(t)
        return transitions

    def forget(self, device_id: str) -> None:
        """The device was deleted: its next message registers it anew."""
        self.known.discard(device_id)
        self.presence.forget(device_id)
        self._info_seen.pop(device_id, None)
        self._dirty_seen.pop(device_id, None)
        self._learning.pop(device_id, None)

    def take_dirty_seen(self) -> list[tuple[str, float]]:
        seen = [(d, ts) for d, ts in self._dirty_seen.items() if d in self.known]
        for d, _ in seen:
            del self._dirty_seen[d]
        return seen

    # ---- registration and control-plane messages -----------------------------------

    async def _register(self, device_id: str, now: float, info: p.DeviceInfo | None = None) -> bool:
        """Register the device; False if another message's registration was under way
        (then ``info`` was not used)."""
        pending = self._registering.get(device_id)
        if pending is not None:
            await pending
            return False

        # Batched with the other registrations queued with it (run_jobs); announced by
        # whichever worker's insert created the row (another worker may register the same
        # device at the same moment: its insert does nothing).
        done = self._submit(NewDevice(device_id, now, info))
        self._registering[device_id] = done
        try:
            await done
            self.known.add(device_id)
            if info is None or not device_service.describes(info):
                # Also when another worker created it: learn_capabilities reads the row.
                self._learning.setdefault(device_id, frozenset())
        finally:
            self._registering.pop(device_id, None)
        return True

    async def _touch(self, device_id: str, now: float) -> None:
        """Register the device if new, then note it is alive."""
        if device_id not in self.known:
            await self._register(device_id, now)
        self._seen(device_id, now)

    async def _on_status(self, device_id: str, online: bool, now: float) -> None:
        if device_id not in self.known:
            if not online:
                return  # an offline status for a device we never saw: nothing to record
            await self._register(device_id, now)
        transition = self.presence.reported(device_id, online, now)
        if online:
            self._dirty_seen[device_id] = now
        if transition is not None:
            await self._record_transition(transition)

    async def _on_info(
        self, device_id: str, info: p.DeviceInfo, payload: bytes, now: float
    ) -> None:
        if info.interval:
            self.presence.set_interval(device_id, info.interval)
        if device_id not in self.known and await self._register(device_id, now, info):
            self._info_seen[device_id] = payload  # registered with this info
            self._seen(device_id, now)
            return
        if device_service.describes(info):  # after any registration under way
            self._learning.pop(device_id, None)
        # Known, or registered meanwhile by another message (e.g. the retained status)
        # without this info: apply it.
        self._seen(device_id, now)
        if self._info_seen.get(device_id) == payload:
            return

        async def job(session: AsyncSession) -> list[Event]:
            return [await _apply_info(session, device_id, info, now)]

        await self._submit(job)
        self._info_seen[device_id] = payload

    async def _on_state(self, device_id: str, state: dict[str, Any], now: float) -> None:
        await self._touch(device_id, now)
        # A firmware may echo its configuration: what viewers and events see of a
        # device's state never carries a secret's value.
        state = secrets.redact_deep(state)

        async def job(session: AsyncSession) -> list[Event]:
            await device_service.set_reported_state(session, device_id=device_id, state=state)
            return [("device_state", device_id, state, now)]

        if device_id in self._learning:  # before the state: written in the same order
            self._learn(device_id, device_service.capabilities_in_state(state), now)
        await self._submit(job)
        if self.control is not None:  # device control: shadow reconciliation
            self.control.on_state(device_id)

    def _learn(self, device_id: str, shown: set[str], now: float) -> None:
        """Record what a device without info has shown it has. The cache is updated at
        once, so a capability is written once, not once per message until the write ran;
        the write is queued, not awaited: a data message's PUBACK waits for its row only
        (after a crash the capability is learned again from the next message)."""
        have = self._learning.get(device_id)
        if have is None or shown <= have or len(have) >= device_service.MAX_LEARNED:
            return
        self._learning[device_id] = have | shown

        async def job(session: AsyncSession) -> list[Event]:
            learned = await device_service.learn_capabilities(
                session, device_id=device_id, capabilities=shown
            )
            if learned is None:
                return []
            payload = {"capabilities": learned, "capabilities_known": False}
            return [("device_updated", device_id, payload, now)]

        self._submit(job)

    async def _on_update_status(self, device_id: str, status: str, now: float) -> None:
        """A device built to the original design reports its update on its status topic:
        kept as a device event (the device page's Events), presence untouched, and its
        rollout follows it (such a device does not ack its ota command)."""
        await self._on_device_event(
            device_id, p.DeviceEvent(event=status), now, update_status=status
        )

    async def _on_device_event(
        self, device_id: str, event: p.DeviceEvent, now: float, update_status: str | None = None
    ) -> None:
        await self._touch(device_id, now)
        data = {"event": event.event, "level": event.level, **event.data}
        ts = event.ts or now

        async def job(session: AsyncSession) -> list[Event]:
            await device_service.add_event(
                session, device_id=device_id, ts=ts, type_="device_event", data=data
            )
            if update_status is not None:
                await rollout_service.follow_update_status(
                    session, device_id=device_id, status=update_status, now=now
                )
            return [("device_event", device_id, data, ts)]

        await self._submit(job)

    async def _on_ack(self, device_id: str, ack: p.Ack, now: float) -> None:
        await self._touch(device_id, now)
        self.publish("command_ack", device_id, ack.model_dump(), now)
        if self.control is not None:  # device control: the command's lifecycle
            await self.control.on_ack(device_id, ack, now)


async def _noop(_session: AsyncSession) -> None:
    return None


async def _apply_info(
    session: AsyncSession, device_id: str, info: p.DeviceInfo, now: float
) -> Event:
    """Apply a device's info; the event that announces it."""
    await device_service.apply_info(session, device_id=device_id, info=info)
    return ("device_updated", device_id, info.model_dump(exclude_none=True), now)

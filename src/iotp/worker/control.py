"""Device control in the worker: dispatches queued commands (when asked by an API
process, when a device comes online, and by a periodic sweep that also catches up
after a restart), records acks, times out and expires commands, reconciles device
shadows and paces firmware rollouts. All state is in the database; this object only
holds caches and wake-up signals, so any worker can pick up where another stopped.

API processes ask for work with control requests (iotp.protocol.control). An API
process publishes a command to an online device itself (with the same
iotp.services.command_sender.Sender); the worker is the fallback: offline devices
coming back, retries, stale claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotp.db.models import CommandRow
from iotp.protocol import payloads as p
from iotp.protocol.control import ControlRequest, parse_request
from iotp.protocol.events import CommandStatus, EventType, PublishEvent
from iotp.services import commands as command_service
from iotp.services import rollouts as rollout_service
from iotp.services import shadow as shadow_service
from iotp.services.auth import resolve_secret_key
from iotp.services.command_sender import PublishConfirmed, Sender
from iotp.services.commands import AckOutcome, SecretBox
from iotp.settings import Settings
from iotp.tasks import run_together

log = logging.getLogger(__name__)

SWEEP_MAX_SECONDS = 1.0
# How soon a sweep runs again when what is due is held by another transaction (an ack
# being recorded, for milliseconds): a later moment, not a loop of empty sweeps.
SWEEP_LOCKED_RETRY_SECONDS = 0.25
ROLLOUT_TICK_SECONDS = 0.5
RETRY_SECONDS = 0.5
FINISHED_CACHE = 20_000
# Per device: acks that need a database lookup, refilled per second up to a burst.
ACK_RATE_PER_SECOND = 20.0
ACK_BURST = 50.0
# Transactions recording acks at once, so a flood cannot take every database connection.
ACK_CONCURRENCY = 4
# Acks recorded in one transaction at most. Under load (a bulk command's thousand answers)
# the acks that arrive while a transaction runs share the next one: one BEGIN and COMMIT
# (and one WAL flush) for many instead of one each. A lone ack goes at once.
ACK_BATCH = 100
STOP_TIMEOUT_SECONDS = 5.0


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, now: float) -> None:
        self.tokens = ACK_BURST
        self.at = now

    def take(self, now: float) -> bool:
        self.tokens = min(ACK_BURST, self.tokens + (now - self.at) * ACK_RATE_PER_SECOND)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _PendingAck:
    __slots__ = ("ack", "device_id", "done", "now")

    def __init__(self, device_id: str, ack: p.Ack, now: float) -> None:
        self.device_id = device_id
        self.ack = ack
        self.now = now
        self.done: asyncio.Future[tuple[AckOutcome, CommandRow | None]] = (
            asyncio.get_running_loop().create_future()
        )


def _settle(
    pending: _PendingAck, outcome: tuple[AckOutcome, CommandRow | None] | Exception
) -> None:
    if pending.done.done():  # its caller is gone (the worker is stopping)
        return
    if isinstance(outcome, Exception):
        pending.done.set_exception(outcome)
    else:
        pending.done.set_result(outcome)


class ControlPlane:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        publish_event: PublishEvent,
        publish_confirmed: PublishConfirmed,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self._publish_event = publish_event
        self.counters: Counter[str] = Counter()
        self.owner = f"worker:{settings.mqtt_client_id}"
        # The install's key: seals secret parameters, signs rollout devices' download URLs.
        self._secret_key = resolve_secret_key(settings)
        self.sender = Sender(
            sessions=sessions,
            box=SecretBox(self._secret_key),
            owner=self.owner,
            publish_confirmed=publish_confirmed,
            publish_event=publish_event,
            counters=self.counters,
        )
        self._sending: set[asyncio.Task[None]] = set()
        self._kick_online: set[str] = set()  # known online: skip the status check
        self._kick_any: set[str] = set()
        self._dispatch_wake = asyncio.Event()
        self._sweep_wake = asyncio.Event()
        self._rollout_wake = asyncio.Event()
        self._shadow_wake = asyncio.Event()
        self._shadow_todo: dict[str, bool] = {}  # device -> known online
        self._next_sweep_at = 0.0
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._buckets: dict[str, _Bucket] = {}
        self._ack_queue: list[_PendingAck] = []
        self._ack_writers: set[asyncio.Task[None]] = set()
        self._acks_in_flight: set[str | None] = set()  # command ids a writer is recording
        self._stopping = False
        self._run_task: asyncio.Task[None] | None = None

    # ---- hooks (from the ingest pipeline and the control topic) ------------------

    def kick(self, device_ids: Iterable[str], *, online: bool = False) -> None:
        (self._kick_online if online else self._kick_any).update(device_ids)
        self._dispatch_wake.set()

    def on_online(self, device_id: str) -> None:
        self.kick([device_id], online=True)
        self._shadow_todo[device_id] = True
        self._shadow_wake.set()
        self._rollout_wake.set()

    def on_state(self, device_id: str) -> None:
        self._shadow_todo.setdefault(device_id, False)
        self._shadow_wake.set()

    async def on_control_message(self, topic: str, payload: bytes) -> None:
        request = parse_request(topic, payload)
        if request is None:
            self.counters["control_rejected"] += 1
            return
        what, devices = request
        if what is ControlRequest.DISPATCH:
            self.kick(devices)
        elif what is ControlRequest.SHADOW:
            for d in devices:
                self._shadow_todo.setdefault(d, False)
            self._shadow_wake.set()
        else:
            self._rollout_wake.set()

    async def on_ack(self, device_id: str, ack: p.Ack, now: float) -> None:
        self.counters["acks"] += 1
        if ack.id is None:
            self.counters["acks_unparsed"] += 1  # the device could not read a command
            return
        if ack.status != "progress" and ack.id in self._finished:
            self.counters["acks_duplicate"] += 1
            return
        bucket = self._buckets.get(device_id)
        if bucket is None:
            bucket = self._buckets[device_id] = _Bucket(now)
        if not bucket.take(now):
            self.counters["acks_dropped_flood"] += 1
            return
        self.sender.answered(device_id, ack)  # recorded below: `sent` need not be
        try:
            # A failed write is tried once more on its own (_write_batch): a pooled
            # connection that died with a database restart costs no device's answer.
            outcome, row = await self._record_ack(device_id, ack, now)
        except Exception:
            log.exception("recording an ack from %s failed", device_id)
            self.counters["acks_failed_to_record"] += 1
            return
        self.counters[f"acks_{outcome.value}"] += 1
        if row is None:
            return
        if outcome is AckOutcome.FINAL and row.deadline is None:
            # Acked while still `sending`: the ack proves delivery, so `sent` first.
            self._publish_event(
                EventType.COMMAND_UPDATE, row.device_id, command_service.sent_view(row), now
            )
        if outcome in (AckOutcome.FINAL, AckOutcome.PROGRESS, AckOutcome.LATE):
            self._emit(row, now)
        if outcome in (AckOutcome.FINAL, AckOutcome.DUPLICATE):
            self._remember_finished(row.id)
        if outcome is AckOutcome.FINAL:
            if row.source == "shadow":
                self.on_state(device_id)
            if row.rollout_id is not None:
                self._rollout_wake.set()
        elif outcome is AckOutcome.PROGRESS and row.rollout_id is not None:
            self._rollout_wake.set()

    async def _record_ack(
        self, device_id: str, ack: p.Ack, now: float
    ) -> tuple[AckOutcome, CommandRow | None]:
        pending = _PendingAck(device_id, ack, now)
        self._ack_queue.append(pending)
        if len(self._ack_writers) < ACK_CONCURRENCY:
            task = asyncio.create_task(self._write_acks())
            self._ack_writers.add(task)
            task.add_done_callback(self._ack_writers.discard)
        return await pending.done

    async def _write_acks(self) -> None:
        me = asyncio.current_task()
        try:
            while self._ack_queue:
                batch = self._take_acks()
                if not batch:
                    # What is left answers commands another writer is recording: that
                    # writer takes it next, so the acks of a command go in order.
                    return
                try:
                    await self._write_batch(batch)
                finally:
                    self._acks_in_flight.difference_update(p.ack.id for p in batch)
        finally:
            # Here, not in a done callback: an ack queued after the last look at the queue
            # must find this writer gone and start another.
            self._ack_writers.discard(me)

    async def _write_batch(self, batch: list[_PendingAck]) -> None:
        try:
            results = await self._apply_acks(batch)
        except asyncio.CancelledError:
            for pending in batch:
                pending.done.cancel()
            raise
        except Exception:  # noqa: BLE001 - each ack is tried again on its own
            # Each alone: one ack's failure must not lose the others, and a transient one
            # (a deadlock the database broke by failing this transaction) gets a second try.
            for i, pending in enumerate(batch):
                try:
                    await self._write_alone(pending)
                except asyncio.CancelledError:
                    for rest in batch[i:]:
                        rest.done.cancel()
                    raise
            return
        for pending, result in zip(batch, results, strict=True):
            _settle(pending, result)

    def _take_acks(self) -> list[_PendingAck]:
        """The next batch, taken in arrival order with one ack per command and none for a
        command another writer is recording: a later ack of the same command waits, so
        the acks of a command are recorded in the order they came and each one's answer
        shows the row as its own statement left it."""
        queue = self._ack_queue
        batch: list[_PendingAck] = []
        rest: list[_PendingAck] = []
        busy = self._acks_in_flight
        i = 0
        while i < len(queue) and len(batch) < ACK_BATCH:
            pending = queue[i]
            if pending.ack.id in busy:
                rest.append(pending)
            else:
                busy.add(pending.ack.id)
                batch.append(pending)
            i += 1
        self._ack_queue = rest + queue[i:]
        return batch

    async def _write_alone(self, pending: _PendingAck) -> None:
        """An ack of a batch that failed, tried again in a transaction of its own."""
        try:
            (result,) = await self._apply_acks([pending])
        except Exception as exc:  # noqa: BLE001 - handed to the ack's own caller
            _settle(pending, exc)
            return
        outcome, row = result
        if outcome is AckOutcome.DUPLICATE and row is not None and row.finished_at == pending.now:
            # The batch committed after all, its COMMIT's answer lost with the connection:
            # this very ack ended the command there (its time is the command's end), and
            # nobody announced it. Taken as the end it is.
            result = (AckOutcome.FINAL, row)
        _settle(pending, result)

    async def _apply_acks(
        self, batch: list[_PendingAck]
    ) -> list[tuple[AckOutcome, CommandRow | None]]:
        async with self.sessions.begin() as session:
            results = await command_service.apply_acks(
                session, [(pending.device_id, pending.ack, pending.now) for pending in batch]
            )
            for outcome, row in results:
                if (
                    outcome is AckOutcome.FINAL
                    and row is not None
                    and row.source == "shadow"
                    and row.status == CommandStatus.FAILED
                ):
                    await shadow_service.note_error(
                        session, device_id=row.device_id, error=f"{row.command}: {row.error}"
                    )
        return results

    # ---- loops ---------------------------------------------------------------------

    async def stop(self) -> None:
        """Let each loop finish its current step (no transaction cut in half)."""
        self._stopping = True
        for event in (
            self._dispatch_wake,
            self._sweep_wake,
            self._shadow_wake,
            self._rollout_wake,
        ):
            event.set()
        if self._run_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._run_task, STOP_TIMEOUT_SECONDS)
        if self._sending:  # publishes awaiting their PUBACK; unrecorded ones go stale
            await asyncio.wait(set(self._sending), timeout=STOP_TIMEOUT_SECONDS)

    async def run(self) -> None:
        self._run_task = asyncio.current_task()
        await run_together(
            {
                "control-dispatch": self._dispatch_loop(),
                "control-sweep": self._sweep_loop(),
                "control-shadow": self._shadow_loop(),
                "control-rollouts": self._rollout_loop(),
            }
        )

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            await self._dispatch_wake.wait()
            self._dispatch_wake.clear()
            if self._stopping:
                return
            online, maybe = self._kick_online, self._kick_any - self._kick_online
            self._kick_online, self._kick_any = set(), set()
            try:
                async with self.sessions.begin() as session:
                    now = time.time()
                    rows: list[CommandRow] = []
                    if online:
                        rows += await command_service.claim(
                            session,
                            device_ids=sorted(online),
                            now=now,
                            owner=self.owner,
                            require_online=False,
                        )
                    if maybe:
                        rows += await command_service.claim(
                            session,
                            device_ids=sorted(maybe),
                            now=now,
                            owner=self.owner,
                            require_online=True,
                        )
            except Exception:
                log.exception("dispatching commands failed; retrying")
                self._kick_online |= online
                self._kick_any |= maybe
                await asyncio.sleep(RETRY_SECONDS)
                self._dispatch_wake.set()
                continue
            self._send(rows, now)

    def _send(self, rows: list[CommandRow], now: float) -> None:
        """Publish claimed commands (their `sending` claim is committed) in the
        background, so the loops go on while the broker's PUBACKs come back."""
        if not rows:
            return
        for row in rows:
            self._emit(row, now)  # sending
        task = asyncio.create_task(self._send_and_track(rows))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_and_track(self, rows: list[CommandRow]) -> None:
        sent = await self.sender.send(rows)
        if any(r.deadline is not None and r.deadline < self._next_sweep_at for r in sent):
            self._sweep_wake.set()

    async def _sweep_loop(self) -> None:
        while not self._stopping:
            now = swept_at = time.time()
            delay = SWEEP_MAX_SECONDS
            finished: list[CommandRow] = []
            try:
                async with self.sessions.begin() as session:
                    finished = await command_service.sweep(session, now=now)
                    # Snapshots: a re-queued command may be claimed again just below.
                    changes = [command_service.to_dict(row) for row in finished]
                    now = time.time()
                    claimed = await command_service.claim(
                        session, device_ids=None, now=now, owner=self.owner, require_online=True
                    )
                    upcoming = await command_service.next_deadline(session)
            except Exception:
                log.exception("command sweep failed; retrying")
                changes, claimed, upcoming = [], [], None
            for change in changes:
                status = change["status"]
                self.counters["requeued" if status == CommandStatus.QUEUED else status] += 1
                self._publish_event(EventType.COMMAND_UPDATE, change["device_id"], change, now)
                if change["rollout_id"] is not None:
                    self._rollout_wake.set()
                if change["source"] == "shadow" and status != CommandStatus.QUEUED:
                    self.on_state(change["device_id"])
            self._send(claimed, now)
            if upcoming is not None:
                delay = min(delay, max(0.01, upcoming - time.time() + 0.005))
                if upcoming < swept_at and len(finished) < command_service.SWEEP_LIMIT:
                    # Due before this sweep and not moved by it: another transaction
                    # holds the row (the sweep skips locked rows). Not again at once.
                    delay = max(delay, SWEEP_LOCKED_RETRY_SECONDS)
            self._next_sweep_at = time.time() + delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_wake.wait(), delay)
            self._sweep_wake.clear()

    async def _shadow_loop(self) -> None:
        while not self._stopping:
            await self._shadow_wake.wait()
            self._shadow_wake.clear()
            if self._stopping:
                return
            todo, self._shadow_todo = self._shadow_todo, {}
            try:
                async with self.sessions() as session:
                    wanting = await shadow_service.with_desired(session, list(todo))
            except Exception:
                log.exception("reading shadows failed; trying each device")
                wanting = set(todo)
            now = time.time()
            for device_id, online in todo.items():
                if device_id not in wanting:
                    continue
                try:
                    async with self.sessions.begin() as session:
                        rows = await shadow_service.reconcile(
                            session,
                            device_id=device_id,
                            online=online,
                            now=now,
                            publish_event=self._publish_event,
                        )
                except Exception:
                    log.exception("shadow reconciliation for %s failed", device_id)
                    continue
                if rows:
                    self.counters["shadow_commands"] += len(rows)
                    self.kick([device_id], online=online)

    async def _rollout_loop(self) -> None:
        while not self._stopping:
            now = time.time()
            try:
                async with self.sessions.begin() as session:
                    await rollout_service.track(session, now=now)
                    queued = await rollout_service.advance(
                        session, now=now, key=self._secret_key, publish_event=self._publish_event
                    )
            except Exception:
                log.exception("rollout step failed; retrying")
                queued = []
            self.counters["rollout_commands"] += len(queued)
            if queued:
                self.kick({row.device_id for row in queued})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rollout_wake.wait(), ROLLOUT_TICK_SECONDS)
            self._rollout_wake.clear()

    # ---- helpers -------------------------------------------------------------------

    def _emit(self, row: CommandRow, now: float) -> None:
        self._publish_event(
            EventType.COMMAND_UPDATE, row.device_id, command_service.to_dict(row), now
        )

    def _remember_finished(self, command_id: str) -> None:
        self._finished[command_id] = None
        if len(self._finished) > FINISHED_CACHE:
            self._finished.popitem(last=False)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counters)

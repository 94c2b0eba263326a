"""Publishing claimed commands to devices: used by the API (online devices, at once) and
by the worker (everything else)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotp.db.models import CommandRow
from iotp.protocol.events import EventType, PublishEvent
from iotp.protocol.payloads import Ack
from iotp.protocol.topics import command_topic
from iotp.services import commands as command_service

log = logging.getLogger(__name__)

# QoS 1 publish; completes on the broker's PUBACK (iotp.mqtt.MqttLink.publish_confirmed).
PublishConfirmed = Callable[[str, bytes], Awaitable[None]]

# How long after the PUBACK `sent` is recorded. A device that answers at once has acked
# by then, and its ack moves the command from `sending` to its end (the recorder of
# acks announces `sent` first): one transaction per command instead of two, and none
# on the path of a waiting request.
RECORD_DELAY_SECONDS = 0.05


class Sender:
    """Publishes commands its owner has claimed (``sending``, committed) and moves them
    on: ``sent`` once the broker has acknowledged the publish (PUBACK), back to
    ``queued`` when it has not within PUBLISH_CONFIRM_TIMEOUT (to be published again).
    If this process dies in between, the claim goes stale and the sweep re-queues it.

    ``sent`` is recorded RECORD_DELAY_SECONDS after the PUBACK, and not at all for a
    command whose final ack this process has seen meanwhile (:meth:`answered`)."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        owner: str,
        publish_confirmed: PublishConfirmed,
        publish_event: PublishEvent,
        box: command_service.SecretBox,
        counters: Counter[str] | None = None,
    ) -> None:
        self.sessions = sessions
        self.box = box
        self.owner = owner
        self._publish_confirmed = publish_confirmed
        self._publish_event = publish_event
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.confirm_timeout = command_service.PUBLISH_CONFIRM_TIMEOUT
        # Published, `sent` not recorded yet: command id -> its device; and those of them
        # a final ack from that device has answered.
        self._unrecorded: dict[str, str] = {}
        self._answered: set[str] = set()

    @property
    def recording(self) -> bool:
        """Whether some published command's `sent` is still to be recorded."""
        return bool(self._unrecorded)

    def answered(self, device_id: str, ack: Ack) -> None:
        """A device's ack as this process received it. A final one, from the command's
        own device, spares recording `sent`: the ack's recorder moves the command on."""
        cid = ack.id
        if cid is not None and ack.status != "progress" and self._unrecorded.get(cid) == device_id:
            self._answered.add(cid)

    async def _publish(self, rows: Sequence[CommandRow]) -> tuple[list[str], list[str]]:
        """Publish; the ids the broker confirmed, and those it did not in time."""
        futures: dict[str, asyncio.Future[None]] = {}
        for row in rows:
            payload = orjson.dumps(command_service.wire_payload(row, self.box))
            futures[row.id] = asyncio.ensure_future(
                self._publish_confirmed(command_topic(row.device_id), payload)
            )
        done, pending = await asyncio.wait(futures.values(), timeout=self.confirm_timeout)
        for fut in pending:
            fut.cancel()
        confirmed: list[str] = []
        unconfirmed: list[str] = []
        for cid, fut in futures.items():
            ok = fut in done and not fut.cancelled() and fut.exception() is None
            (confirmed if ok else unconfirmed).append(cid)
        return confirmed, unconfirmed

    async def send(self, rows: Sequence[CommandRow]) -> list[CommandRow]:
        """Publish and record; returns the rows now ``sent`` (the others are queued
        again, or were acked meanwhile)."""
        if not rows:
            return []
        # Tracked from before the publish: the ack can come in before the PUBACK is seen.
        for row in rows:
            self._unrecorded[row.id] = row.device_id
        try:
            confirmed, unconfirmed = await self._publish(rows)
            if confirmed:
                await asyncio.sleep(RECORD_DELAY_SECONDS)
        finally:
            answered = {row.id for row in rows if row.id in self._answered}
            for row in rows:
                self._unrecorded.pop(row.id, None)
                self._answered.discard(row.id)
        confirmed = [cid for cid in confirmed if cid not in answered]
        if not confirmed and not unconfirmed:
            return []
        try:
            async with self.sessions.begin() as session:
                now = time.time()
                sent = await command_service.mark_sent(
                    session, command_ids=confirmed, owner=self.owner, now=now
                )
                released = await command_service.release(
                    session, command_ids=unconfirmed, owner=self.owner, now=now
                )
        except Exception:
            # The claims stay `sending`; once stale, the sweep re-queues them.
            log.exception("recording %d published commands failed", len(rows))
            self.counters["send_record_failed"] += len(rows)
            return []
        self.counters["sent"] += len(sent)
        self.counters["publish_unconfirmed"] += len(unconfirmed)
        for row in (*sent, *released):
            command = command_service.to_dict(row)
            self._publish_event(EventType.COMMAND_UPDATE, row.device_id, command, now)
        if unconfirmed:
            log.warning("%d command publishes not confirmed by the broker", len(unconfirmed))
        return sent

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
from iotp.protocol.topics import command_topic
from iotp.services import commands as command_service

log = logging.getLogger(__name__)

# QoS 1 publish; completes on the broker's PUBACK (iotp.mqtt.MqttLink.publish_confirmed).
PublishConfirmed = Callable[[str, bytes], Awaitable[None]]


class Sender:
    """Publishes commands its owner has claimed (``sending``, committed) and moves them
    on: ``sent`` once the broker has acknowledged the publish (PUBACK), back to
    ``queued`` when it has not within PUBLISH_CONFIRM_TIMEOUT (to be published again).
    If this process dies in between, the claim goes stale and the sweep re-queues it."""

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

    async def send(self, rows: Sequence[CommandRow]) -> list[CommandRow]:
        """Publish and record; returns the rows now ``sent`` (the others are queued
        again, or were acked meanwhile)."""
        if not rows:
            return []
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

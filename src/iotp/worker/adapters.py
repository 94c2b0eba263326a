"""The worker's side of the adapters: foreign messages become the platform's own device
messages and take the ordinary ingest path (validation, storage, presence, rules,
command tracking); platform commands for mapped devices go out in the firmware's form.

Foreign topics have subscriptions of their own and reach this hook only after the
worker has checked its own prefixes, so the platform's devices pay nothing for it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotp.adapters import AdapterEngine, KeyReport, Mapping, MappingError, Translation
from iotp.db.models import Device
from iotp.protocol.topics import TOPIC_ROOT
from iotp.services import adapters as adapter_service
from iotp.settings import Settings
from iotp.worker.ingest import Ingestor

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]  # QoS 1 publish on the broker


class AdapterHook:
    def __init__(
        self,
        *,
        settings: Settings,
        ingestor: Ingestor,
        publish: Publish,
        subscribe: Callable[[str], None],
        unsubscribe: Callable[[str], None],
        on_filters: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.sessions: async_sessionmaker[AsyncSession] = ingestor.sessions
        self._publish = publish
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self.engine = AdapterEngine(claimed=self._claimed)
        self.counters: Counter[str] = Counter()
        self._version: tuple[int, float] | None = None
        # Called after the topic filters changed (the RabbitMQ queue input rebinds).
        self.on_filters = on_filters
        self._active: dict[str, Mapping] = {}
        # Mappings from the configuration and the database, which ``refresh`` keeps in
        # step; mappings added in code (``add``) are left alone by it.
        self._managed: set[str] = set()
        # Devices met fresh whose messages wait for what the platform stored of them:
        # the last waiting translation of each, which the next one waits for in turn.
        self._seeding: dict[str, asyncio.Future[None]] = {}
        for mapping in adapter_service.configured(settings):
            self.engine.add(mapping)
            self._active[mapping.name] = mapping
            self._managed.add(mapping.name)

    def _claimed(self, device_id: str) -> bool:
        # Known to the ingest path, and not bound to a mapping (bindings are checked
        # first): one of the platform's own devices.
        return device_id in self.ingestor.known

    def share(self, topic: str) -> str:
        group = self.settings.mqtt_share_group
        return f"$share/{group}/{topic}" if group else topic

    def filters(self) -> list[str]:
        return [self.share(t) for t in self.engine.subscriptions()]

    # ---- mappings at run time ------------------------------------------------------------

    def add(self, mapping: Mapping) -> None:
        """Add or replace a mapping now (the Home Assistant discovery uses this too)."""
        before = set(self.engine.subscriptions())
        self.engine.add(mapping)
        self._active[mapping.name] = mapping
        self._resubscribe(before)

    def remove(self, name: str) -> None:
        before = set(self.engine.subscriptions())
        self._active.pop(name, None)
        self.engine.remove(name)
        self._resubscribe(before)

    def _resubscribe(self, before: set[str]) -> None:
        # Filters covered by another are left out (the broker would deliver twice), so a
        # change may need new ones as well as drop others.
        after = set(self.engine.subscriptions())
        if after != before and self.on_filters is not None:
            self.on_filters()
        for topic in sorted(after - before):
            self._subscribe(self.share(topic))
        for topic in sorted(before - after):
            self._unsubscribe(self.share(topic))

    async def load(self) -> None:
        """Bind the mapped devices registered before (their topics, for commands), and
        take up the mappings saved through the API."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(Device.id, Device.meta, Device.capabilities, Device.units)
            )
            for device_id, meta, capabilities, units in rows:
                self._bind(device_id, meta, capabilities, units)
        await self.refresh()

    def _bind(
        self,
        device_id: str,
        meta: dict[str, Any] | None,
        capabilities: list[str] | None,
        units: dict[str, str] | None,
    ) -> bool:
        adapter = (meta or {}).get("adapter")
        if not isinstance(adapter, dict) or not isinstance(adapter.get("mapping"), str):
            return False
        raw = adapter.get("vars")
        captured: dict[str, Any] = raw if isinstance(raw, dict) else {}
        self.engine.bind(
            device_id,
            adapter["mapping"],
            {str(k): str(v) for k, v in captured.items()},
            capabilities=capabilities or (),
            units=units or {},
        )
        return True

    async def refresh(self) -> bool:
        async with self.sessions() as session:
            version = await adapter_service.version(session)
            if version == self._version:
                return False
            wanted = {m.name: m for m in await adapter_service.active(session, self.settings)}
        self._version = version
        for name in sorted(self._managed - set(wanted)):
            self.remove(name)
            self._managed.discard(name)
            log.info("adapter mapping %s turned off", name)
        for name, mapping in wanted.items():
            self._managed.add(name)
            if self._active.get(name) != mapping:
                self.add(mapping)
                log.info("adapter mapping %s in force", name)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.adapters_poll_seconds)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep the mappings we have
                log.warning("reading adapter mappings failed: %s", exc)

    # ---- messages ----------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> Awaitable[None] | None:
        """A message on a foreign topic. Returns what the ingest path returned for the
        messages it became (awaited before the PUBACK, as for the platform's own)."""
        try:
            translation = self.engine.translate(topic, payload, time.time())
        except MappingError as exc:
            self.ingestor.counters.received += 1
            self.ingestor.reject(exc.reason, topic, str(exc))
            return None
        if translation.ignored:
            self.counters["ignored"] += 1
            return None
        self.counters["translated"] += 1
        if any(self.engine.fresh(d) or d in self._seeding for d in translation.device_ids):
            return self._seeded(translation)
        return self._ingest(translation)

    def _ingest(self, translation: Translation) -> Awaitable[None] | None:
        pending = [
            p
            for p in (self.ingestor.handle(t, b) for t, b in translation.messages)
            if p is not None
        ]
        pending.extend(self._settle(report) for report in translation.reports)
        if not pending:
            return None
        if len(pending) == 1:
            return pending[0]
        return _all(pending)

    async def _seeded(self, translation: Translation) -> None:
        """A device this worker has not met since it started (or since it was forgotten)
        may have been registered by another worker, which saw more of it: its stored
        capabilities and units join this worker's binding before any info of it goes
        out, and its messages keep their order meanwhile."""
        ids = translation.device_ids
        before = {self._seeding[d] for d in ids if d in self._seeding}
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for device_id in ids:
            self._seeding[device_id] = done
        try:
            if before:
                await asyncio.wait(before)
            fresh = [d for d in ids if self.engine.fresh(d)]
            stored: dict[str, tuple[list[str], dict[str, str]]] = {}
            if fresh:
                try:
                    async with self.sessions() as session:
                        rows = await session.execute(
                            select(Device.id, Device.capabilities, Device.units).where(
                                Device.id.in_(fresh)
                            )
                        )
                        for device_id, capabilities, units in rows:
                            stored[device_id] = (capabilities or [], units or {})
                except Exception as exc:  # noqa: BLE001 - what this worker saw goes ahead
                    log.warning("stored capabilities of %s not read: %s", fresh, exc)
                for device_id in fresh:
                    self.engine.seed(device_id, *stored.get(device_id, ([], {})))
            # Infos rendered before the seeding lack what was stored: render them again
            # (none when the first waiting translation sent the same already).
            infos = {f"{TOPIC_ROOT}/{d}/info" for d in ids}
            rest = [m for m in translation.messages if m[0] not in infos]
            fresh_infos = [i for i in (self.engine.info_now(d) for d in ids) if i is not None]
            translation.messages = fresh_infos + rest
            # Handed to the ingest path in order: the next message may go on now, without
            # waiting for this one to be stored.
            pending = self._ingest(translation)
        finally:
            for device_id in ids:
                if self._seeding.get(device_id) is done:
                    del self._seeding[device_id]
            done.set_result(None)
        if pending is not None:
            await pending

    async def _settle(self, report: KeyReport) -> None:
        """A report of keys commands are acked by: the device's open commands it answers
        are acked through the ordinary ack path, whichever worker published them (with
        shared subscriptions or the queue input, the firmware's report may reach a
        worker other than the one holding the expectation in memory). Its own
        expectations were settled in memory already and are not acked twice."""
        try:
            async with self.sessions() as session:
                rows = await adapter_service.open_commands(session, report.device_id)
        except Exception as exc:  # noqa: BLE001 - the command times out, as before
            log.warning("open commands of %s not read: %s", report.device_id, exc)
            return
        pending = []
        for command_id, name, params in reversed(rows):  # oldest first, as sent
            ack = self.engine.settle(report.device_id, command_id, name, params, report)
            if ack is None:
                continue
            self.counters["acks_from_database"] += 1
            done = self.ingestor.handle(*ack)
            if done is not None:
                pending.append(done)
        if pending:
            await _all(pending)

    def on_command(self, device_id: str, payload: bytes) -> Awaitable[None] | None:
        """The platform's command to a device (``devices/{id}/commands``): for a mapped
        device, published in its firmware's form; refusals are acked at once."""
        if self.engine.owner(device_id) is None:
            if device_id in self.ingestor.known:
                return None  # one of the platform's own devices
            # A device this worker has not met since it started (another worker of the
            # share group registered it): its mapping is in the database.
            return self._command_after_lookup(device_id, payload)
        return self._command(device_id, payload)

    async def _command_after_lookup(self, device_id: str, payload: bytes) -> None:
        try:
            async with self.sessions() as session:
                device = await session.get(Device, device_id)
        except Exception as exc:  # noqa: BLE001 - the command times out, as before
            log.warning("device %s not read for its command: %s", device_id, exc)
            return
        if self.engine.owner(device_id) is None and (
            device is None
            or not self._bind(device_id, device.meta, device.capabilities, device.units)
        ):
            return
        done = self._command(device_id, payload)
        if done is not None:
            await done

    def _command(self, device_id: str, payload: bytes) -> Awaitable[None] | None:
        out, acks = self.engine.command(device_id, payload, time.time())
        for topic, body in out:
            self._publish(topic, body)
            self.counters["commands"] += 1
        pending = [p for p in (self.ingestor.handle(t, b) for t, b in acks) if p is not None]
        return _all(pending) if pending else None

    def forget(self, device_id: str) -> None:
        self.engine.forget(device_id)

    def snapshot(self) -> dict[str, Any]:
        return {"mappings": sorted(self._active), **self.counters}


async def _all(pending: list[Awaitable[None]]) -> None:
    await asyncio.gather(*pending)

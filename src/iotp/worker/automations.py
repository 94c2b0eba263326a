"""The worker side of automations: feeds the pure engine from the ingest hook and the
platform events, and does the I/O the engine asks for, off the hot path.

``on_data`` (called for every telemetry message) and ``on_event`` only touch memory and
set a wake-up event; one task reloads rules/webhooks/devices when they change, ticks
timers and schedules, runs the actions of each firing (commands and desired state via
device control, alerts, notifications, webhooks) and writes queued webhook events to
the delivery outbox; another sends due deliveries with retries.

With several workers (shared subscriptions) each sees its share of devices, so
device-triggered rules are evaluated exactly once; schedule rules run on every worker
(docs/automations.md)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import httpx
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotp.automation.engine import CLEAR, FIRE, Engine, Firing
from iotp.automation.spec import (
    AlertAction,
    ClearAlertAction,
    CommandAction,
    NotifyAction,
    Rule,
    ShadowAction,
    WebhookAction,
    reading,
    render,
)
from iotp.db.automation_models import WebhookRow
from iotp.db.models import Device
from iotp.errors import IotpError
from iotp.protocol.events import PublishEvent
from iotp.services import alerts as alert_service
from iotp.services import rules as rule_service
from iotp.services import webhook_delivery as delivery
from iotp.services import webhooks as webhook_service
from iotp.settings import Settings
from iotp.tasks import run_together

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
RELOAD_SECONDS = 1.0
DEVICES_RELOAD_SECONDS = 15.0
DELIVERY_POLL_SECONDS = 1.0
DELIVERY_BATCH = 50
DELIVERY_CONCURRENCY = 8
MAX_OUTBOX = 100_000
COMMAND_TIMEOUT = 10.0
ACTION_ATTEMPTS = 6
COMMAND_TTL = 60.0


class Control(Protocol):
    """What automations need from device control (iotp.worker.control.ControlPlane)."""

    def kick(self, device_ids: Iterable[str], *, online: bool = False) -> None: ...

    def on_state(self, device_id: str) -> None: ...


class Automations:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        publish_event: PublishEvent,
        control: Control | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.publish_event = publish_event
        self.control = control
        self.engine = Engine()
        self.counters: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._delivery_wake = asyncio.Event()
        self._subs: list[webhook_service.Subscription] = []
        self._telemetry_all: tuple[int, ...] = ()
        self._telemetry_devices: dict[str, tuple[int, ...]] = {}
        self._outbox: list[tuple[list[int], dict[str, Any]]] = []
        self._rules_version: tuple[int, float] | None = None
        self._hooks_version: tuple[int, float] | None = None
        self._devices_at = 0.0
        self._next_reload = 0.0
        self._stopping = False
        self._restored = False
        self._http: httpx.AsyncClient | None = None

    # ---- hooks (in-memory only) ---------------------------------------------------------

    def on_data(self, device_id: str, metrics: dict[str, float], ts: float) -> None:
        engine = self.engine
        engine.on_data(device_id, metrics, ts)
        if engine.out:
            self._wake.set()
        if self._telemetry_all or device_id in self._telemetry_devices:
            hooks = self._telemetry_all + self._telemetry_devices.get(device_id, ())
            self._queue(
                list(dict.fromkeys(hooks)), "telemetry", device_id, {"metrics": metrics}, ts
            )

    def on_event(self, event_type: str, device_id: str, payload: dict[str, Any], ts: float) -> None:
        if event_type in ("device_registered", "device_updated"):
            meta = self.engine.devices.get(device_id)
            name = payload.get("name") or (meta.name if meta else device_id)
            self.engine.set_device(
                device_id,
                name=str(name),
                type_=payload.get("type") or (meta.type if meta else None),
                tags=meta.tags if meta else (),
                units=payload.get("units"),
            )
        self.engine.on_event(event_type, device_id, payload, ts)
        if self._subs:
            device = None if device_id == "-" else device_id
            hooks = [s.webhook_id for s in self._subs if s.wants(event_type, device)]
            if hooks:
                self._queue(hooks, event_type, device, payload, ts)
        if self.engine.out:
            self._wake.set()

    def _queue(
        self,
        hooks: list[int],
        event_type: str,
        device_id: str | None,
        payload: dict[str, Any],
        ts: float,
    ) -> None:
        if len(self._outbox) >= MAX_OUTBOX:
            self.counters["webhook_events_dropped_outbox_full"] += 1
            return
        body = webhook_service.event_body(event_type, device_id, dict(payload), ts)
        self._outbox.append((hooks, body))
        self._wake.set()

    # ---- loops --------------------------------------------------------------------------

    async def run(self) -> None:
        self._http = httpx.AsyncClient(headers={"User-Agent": delivery.USER_AGENT})
        try:
            await run_together(
                {"automations": self._main_loop(), "webhook-delivery": self._delivery_loop()}
            )
        finally:
            await self._http.aclose()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._delivery_wake.set()

    async def _main_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
            self._wake.clear()
            try:
                await self.step()
            except Exception:
                log.exception("automations step failed; retrying")
                self.counters["step_errors"] += 1
                await asyncio.sleep(TICK_SECONDS)

    async def step(self, now: float | None = None) -> None:
        """One round: reload what changed, tick, act, flush webhook events."""
        now = time.time() if now is None else now
        if now >= self._next_reload:
            self._next_reload = now + RELOAD_SECONDS
            await self.reload(now)
        self.engine.tick(now)
        firings = self.engine.take()
        if firings:
            await self._act(firings)
        if self._outbox:
            await self._flush_outbox()

    async def reload(self, now: float) -> None:
        async with self.sessions() as session:
            version = await rule_service.version(session)
            if version != self._rules_version:
                rules = await rule_service.load_enabled(session)
                if rules and not self.engine.rules:
                    self._devices_at = 0.0  # the devices' names, tags and units, now
                self.engine.load(rules)
                self._rules_version = version
                self.counters["rule_reloads"] += 1
                log.info("automations: %d enabled rules", len(self.engine.rules))
            # Only rules read the whole fleet's names, tags and units: without any, a large
            # fleet is not read every DEVICES_RELOAD_SECONDS for nothing.
            if self.engine.rules and now - self._devices_at >= DEVICES_RELOAD_SECONDS:
                self._devices_at = now
                rows = await session.execute(
                    select(Device.id, Device.name, Device.type, Device.tags, Device.units)
                )
                for device_id, name, type_, tags, units in rows.all():
                    self.engine.set_device(
                        device_id, name=name, type_=type_, tags=tags or [], units=units
                    )
            if not self._restored:
                for rule_id, device_id in await alert_service.open_rule_alerts(session):
                    if rule_id in self.engine.rules:
                        self.engine.assume_active(rule_id, device_id)
                self._restored = True
            hooks = await webhook_service.version(session)
            if hooks != self._hooks_version:
                subs = await webhook_service.subscriptions(session)
                self._hooks_version = hooks
                self._set_subscriptions(subs)

    def _set_subscriptions(self, subs: list[webhook_service.Subscription]) -> None:
        self._subs = [s for s in subs if s.events - {"telemetry"}]
        every: list[int] = []
        per_device: dict[str, list[int]] = {}
        for s in subs:
            if "telemetry" not in s.events:
                continue
            if not s.devices:
                every.append(s.webhook_id)
            for d in s.devices:
                per_device.setdefault(d, []).append(s.webhook_id)
        self._telemetry_all = tuple(every)
        self._telemetry_devices = {d: tuple(ids) for d, ids in per_device.items()}

    async def _flush_outbox(self) -> None:
        batch, self._outbox = self._outbox, []
        now = time.time()
        async with self.sessions.begin() as session:
            for hooks, body in batch:
                webhook_service.add_deliveries(session, hooks, body, now)
        self.counters["webhook_events"] += len(batch)
        self._delivery_wake.set()

    # ---- actions ------------------------------------------------------------------------

    async def _act(self, firings: list[Firing]) -> None:
        fired: dict[int, tuple[int, float]] = {}
        for firing in firings:
            rule = self.engine.rules.get(firing.rule_id)
            if rule is None:
                continue
            if firing.kind == FIRE:
                count, _ = fired.get(rule.id, (0, 0.0))
                fired[rule.id] = (count + 1, firing.ts)
            for action in rule.actions:
                if action.when == firing.kind:
                    await self._run_action(rule, action, firing)
            if firing.kind == CLEAR:
                for action in rule.actions:
                    if isinstance(action, AlertAction) and action.auto_clear:
                        await self._retrying(
                            rule,
                            "auto_clear",
                            functools.partial(
                                self._clear_alert, rule.id, firing.device_id, "auto", firing.ts
                            ),
                        )
        if fired:
            async with self.sessions.begin() as session:
                totals = await rule_service.note_fired(session, fired)
            for rule_id, (count, last) in totals.items():
                self.publish_event(
                    "rule_fired",
                    "-",
                    {"rule_id": rule_id, "fire_count": count, "last_fired_at": last},
                    last,
                )

    def _values(self, rule: Rule, firing: Firing) -> dict[str, Any]:
        meta = self.engine.devices.get(firing.device_id) if firing.device_id else None
        return {
            **firing.context,
            **reading(firing.context),
            "rule": rule.name,
            "rule_id": rule.id,
            "device": (meta.name if meta and meta.name else firing.device_id) or "",
            "device_id": firing.device_id or "",
            "kind": firing.kind,
        }

    def _targets(
        self, rule: Rule, action: CommandAction | ShadowAction, firing: Firing
    ) -> list[str]:
        if action.device_id:
            return [action.device_id]
        if action.tags:
            wanted = set(action.tags)
            return sorted(d for d, m in self.engine.devices.items() if m.tags.issuperset(wanted))
        if firing.device_id:
            return [firing.device_id]
        return self.engine.scope_devices(rule)

    async def _run_action(self, rule: Rule, action: Any, firing: Firing) -> None:
        await self._retrying(
            rule, type(action).__name__, lambda: self._run_action_once(rule, action, firing)
        )

    async def _retrying(self, rule: Rule, kind: str, make: Callable[[], Awaitable[None]]) -> None:
        for attempt in range(ACTION_ATTEMPTS):
            try:
                await make()
                self.counters[f"action_{kind}"] += 1
                return
            except OperationalError as exc:  # SQLite busy, a dropped connection: retry
                if attempt + 1 == ACTION_ATTEMPTS:
                    self._action_failed(rule, kind, exc)
                    return
                await asyncio.sleep(0.05 * 2**attempt)
            except Exception as exc:  # noqa: BLE001 - one failing action must not stop others
                self._action_failed(rule, kind, exc)
                return

    def _action_failed(self, rule: Rule, kind: str, exc: Exception) -> None:
        self.counters["action_errors"] += 1
        log.warning("rule %d (%s): %s failed: %s", rule.id, rule.name, kind, exc)

    async def _run_action_once(self, rule: Rule, action: Any, firing: Firing) -> None:
        if isinstance(action, CommandAction):
            await self._command(rule, action, firing)
        elif isinstance(action, ShadowAction):
            await self._shadow(rule, action, firing)
        elif isinstance(action, AlertAction):
            await self._raise_alert(rule, action, firing)
        elif isinstance(action, ClearAlertAction):
            await self._clear_alert(action.rule_id or rule.id, firing.device_id, "rule", firing.ts)
        elif isinstance(action, NotifyAction):
            values = self._values(rule, firing)
            payload = {
                "level": action.level,
                "message": render(action.message, values),
                "rule_id": rule.id,
                "rule": rule.name,
                "kind": firing.kind,
            }
            self.publish_event("notification", firing.device_id or "-", payload, firing.ts)
        elif isinstance(action, WebhookAction):
            await self._webhook(rule, action, firing)

    async def _webhook(self, rule: Rule, action: WebhookAction, firing: Firing) -> None:
        payload = {
            "rule_id": rule.id,
            "rule": rule.name,
            "kind": firing.kind,
            "context": firing.context,
        }
        body = webhook_service.event_body("rule", firing.device_id, payload, firing.ts)
        async with self.sessions.begin() as session:
            hook = await session.get(WebhookRow, action.webhook_id)
            if hook is None or not hook.enabled:
                raise IotpError(f"webhook {action.webhook_id} is missing or disabled")
            webhook_service.add_deliveries(session, [hook.id], body, time.time())
        self._delivery_wake.set()

    async def _command(self, rule: Rule, action: CommandAction, firing: Firing) -> None:
        from iotp.services import commands as command_service  # device control

        targets = self._targets(rule, action, firing)
        rows = []
        errors: list[str] = []
        now = time.time()
        async with self.sessions.begin() as session:
            for device_id in targets:
                try:
                    async with session.begin_nested():
                        row = await command_service.issue(
                            session,
                            device=device_id,
                            command=action.command,
                            params=action.params,
                            ack_timeout=COMMAND_TIMEOUT,
                            ttl=COMMAND_TTL,
                            source="rule",
                            now=now,
                            publish_event=self.publish_event,
                        )
                        rows.append(row)
                except IotpError as exc:
                    errors.append(f"{device_id}: {exc}")
        if rows and self.control is not None:
            self.control.kick([r.device_id for r in rows])
        if errors:
            raise IotpError("; ".join(errors)[:500])

    async def _shadow(self, rule: Rule, action: ShadowAction, firing: Firing) -> None:
        from iotp.services import shadow as shadow_service  # device control

        targets = self._targets(rule, action, firing)
        async with self.sessions.begin() as session:
            for device_id in targets:
                await shadow_service.set_desired(
                    session, device_id=device_id, desired=action.desired, merge=True
                )
        if self.control is not None:
            for device_id in targets:
                self.control.on_state(device_id)

    async def _raise_alert(self, rule: Rule, action: AlertAction, firing: Firing) -> None:
        values = self._values(rule, firing)
        async with self.sessions.begin() as session:
            row, created = await alert_service.raise_alert(
                session,
                key=alert_service.rule_key(rule.id, firing.device_id),
                name=rule.name,
                severity=action.severity,
                message=render(action.message, values),
                rule_id=rule.id,
                device_id=firing.device_id,
                data=firing.context,
                now=firing.ts,
            )
            data = alert_service.to_dict(row)
        if created:
            self.publish_alert("raised", data, firing.ts)

    async def _clear_alert(self, rule_id: int, device_id: str | None, by: str, ts: float) -> None:
        async with self.sessions.begin() as session:
            row = await alert_service.clear_key(
                session, key=alert_service.rule_key(rule_id, device_id), by=by, now=ts
            )
            data = alert_service.to_dict(row) if row is not None else None
        if data is not None:
            self.publish_alert("cleared", data, ts)

    def publish_alert(self, action: str, data: dict[str, Any], ts: float) -> None:
        self.publish_event("alert", data.get("device_id") or "-", {"action": action, **data}, ts)

    # ---- webhook delivery ---------------------------------------------------------------

    async def _delivery_loop(self) -> None:
        while not self._stopping:
            try:
                delay = await self.deliver_due()
            except Exception:
                log.exception("webhook delivery round failed; retrying")
                delay = DELIVERY_POLL_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._delivery_wake.wait(), delay)
            self._delivery_wake.clear()

    async def deliver_due(self) -> float:
        """Send what is due; returns how long to wait before the next round."""
        assert self._http is not None
        s = self.settings
        now = time.time()
        async with self.sessions.begin() as session:
            claimed = await webhook_service.claim_due(session, now=now, limit=DELIVERY_BATCH)
            hook_ids = {d.webhook_id for d in claimed}
            hooks = {
                h.id: (h.url, h.secret, h.enabled)
                for h in (
                    await session.scalars(select(WebhookRow).where(WebhookRow.id.in_(hook_ids)))
                ).all()
            }
        slots = asyncio.Semaphore(DELIVERY_CONCURRENCY)
        client = self._http

        async def one(d_id: int, hook_id: int, body: dict[str, Any]) -> None:
            url, secret, enabled = hooks.get(hook_id, ("", "", False))
            async with slots:
                if not url:
                    outcome = webhook_service.Outcome(False, None, "webhook deleted", 0.0)
                elif not enabled:  # queued before the worker saw it disabled: not sent
                    outcome = webhook_service.Outcome(False, None, "webhook disabled", 0.0)
                else:
                    outcome = await delivery.send(
                        client,
                        url=url,
                        secret=secret,
                        body=body,
                        request_timeout=s.webhook_timeout_seconds,
                        allow_private=s.webhook_allow_private,
                    )
            self.counters["webhook_ok" if outcome.ok else "webhook_failed_attempts"] += 1
            async with self.sessions.begin() as session:
                _, hook, disabled = await webhook_service.record(
                    session,
                    delivery_id=d_id,
                    outcome=outcome,
                    now=time.time(),
                    max_attempts=s.webhook_max_attempts,
                    backoff_base=s.webhook_backoff_seconds,
                    disable_after=s.webhook_disable_after,
                )
                if disabled and hook is not None:
                    row, created = await alert_service.raise_alert(
                        session,
                        key=f"webhook:{hook.id}",
                        name=f"Webhook {hook.name} disabled",
                        severity="warning",
                        message=hook.disabled_reason or "disabled after repeated failures",
                        data={"webhook_id": hook.id, "url": hook.url},
                    )
                    alert = alert_service.to_dict(row) if created else None
                else:
                    alert = None
            if alert is not None:
                self._hooks_version = None  # drop its subscriptions at the next reload
                self.publish_alert("raised", alert, time.time())

        if claimed:
            await asyncio.gather(*(one(d.id, d.webhook_id, d.body) for d in claimed))
            if len(claimed) == DELIVERY_BATCH:
                return 0.0
        async with self.sessions() as session:
            upcoming = await webhook_service.next_due(session)
        if upcoming is None:
            return DELIVERY_POLL_SECONDS
        return max(0.05, min(DELIVERY_POLL_SECONDS, upcoming - time.time()))

    def snapshot(self) -> dict[str, Any]:
        return {
            "rules": len(self.engine.rules),
            **dict(self.counters),
            **{f"engine_{k}": v for k, v in self.engine.counters.items()},
        }

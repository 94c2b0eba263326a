"""The Home Assistant bridge: one MQTT connection of the worker's that keeps Home
Assistant's discovery configs in step with the platform's devices (driven by platform
events), turns Home Assistant's commands into the platform's commands, and registers
devices that announce themselves with Home Assistant discovery (docs/devices.md).

Every worker runs one; what they publish is the same retained config, so several agree.
What must happen once (a command, a reading) comes through shared subscriptions when
the workers share their load (IOTP_MQTT_SHARE_GROUP)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotp import __version__
from iotp.db.models import Device
from iotp.errors import IotpError
from iotp.homeassistant import consume, publish
from iotp.homeassistant.publish import DeviceView, Topics
from iotp.mqtt import MqttLink
from iotp.protocol.events import EventType, PublishEvent, event_subscription
from iotp.protocol.topics import DEVICE_ID_RE, TOPIC_ROOT, Kind, device_topic, subscription
from iotp.services import commands as command_service
from iotp.services import credentials as cred_service
from iotp.services import discovery_accounts
from iotp.services import users as user_service
from iotp.services.auth import Role, generate_secret
from iotp.settings import MqttUrl, Settings

log = logging.getLogger(__name__)

# The platform user Home Assistant's commands are made as: its role decides whether
# they are accepted (an admin can demote or disable it to stop them).
SERVICE_USER = user_service.HOMEASSISTANT_USER
COMMAND_SOURCE = "homeassistant"
# Foreign devices: their info is published once their configs have stopped arriving
# for this long (a device sends one config per entity, all at once).
INFO_SETTLE_SECONDS = 0.2
ACK_PUBLISH_TIMEOUT_SECONDS = 10.0
WATCHED_EVENTS = (
    EventType.DEVICE_REGISTERED,
    EventType.DEVICE_UPDATED,
    EventType.DEVICE_DELETED,
    EventType.DEVICE_STATUS,
)


def view(device: Device) -> DeviceView:
    mac = (device.meta or {}).get("mac")
    units = tuple(sorted((k, v) for k, v in (device.units or {}).items() if isinstance(v, str)))
    return DeviceView(
        id=device.id,
        name=device.name,
        type=device.type,
        firmware=device.firmware_version,
        capabilities=tuple(device.capabilities or ()),
        mac=mac if isinstance(mac, str) else None,
        units=units,
    )


def encode(config: dict[str, Any]) -> bytes:
    # Sorted keys: the same config is the same bytes in every worker, so a worker can
    # tell its own (or an equal) retained config from a changed one.
    return orjson.dumps(config, option=orjson.OPT_SORT_KEYS)


class HomeAssistantBridge:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        url: MqttUrl,
        publish_event: PublishEvent,
        kick: Callable[[Iterable[str]], None],
        adapter_filters: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.topics = Topics(settings.homeassistant_prefix, settings.homeassistant_topic_root)
        self._publish_event = publish_event
        self._kick = kick
        # The topic filters the adapters map (iotp.adapters): firmware they know (Tasmota
        # announces itself to Home Assistant too) is theirs, not registered twice.
        self._adapter_filters = adapter_filters
        self.counters: Counter[str] = Counter()
        events = settings.events_topic_prefix
        self._events_prefix = events + "/"
        self._reserved = frozenset(
            {TOPIC_ROOT, "provision", events.split("/")[0], self.topics.prefix, self.topics.root}
        )
        subscriptions = [
            *((event_subscription(events, t), 1) for t in WATCHED_EVENTS),
            (self.topics.birth(), 1),
            *((t, 1) for t in self.topics.config_subscriptions()),
            (self._shared(self.topics.command_subscription()), 1),
            (self._shared(subscription(Kind.COMMANDS)), 1),
        ]
        self.link = MqttLink(
            url,
            client_id=f"{settings.mqtt_client_id}.homeassistant",
            subscriptions=subscriptions,
            handler=self._on_message,
            clean_session=False,
        )
        # Our configs as retained on the broker: device -> topic -> payload.
        self._ours: dict[str, dict[str, bytes]] = {}
        self._due: set[str] = set()
        # Deleted devices, until registered again: a read of the database that began
        # before the deletion must not publish their configs again.
        self._gone: set[str] = set()
        self._wake = asyncio.Event()
        # Foreign devices (announced by Home Assistant discovery).
        self.foreign: dict[str, consume.Device] = {}
        self._state_routes: dict[str, list[consume.Entity]] = {}
        self._availability_routes: dict[str, list[tuple[str, str, str]]] = {}
        self._relays: dict[str, dict[str, bool]] = {}
        self._info_due: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._user_lock = asyncio.Lock()
        self._user_ensured = False
        self._background: set[asyncio.Task[Any]] = set()
        # Secure mode: the broker accounts of devices that announce themselves (node ->
        # {"write", "read"}). Their configs are read in order, after the accounts are
        # known, so that a config cannot send a device's readings or commands to topics
        # its account does not have (another device's, whose commands it would then
        # receive from the platform).
        self._accounts: dict[str, dict[str, list[str]]] = {}
        self._accounts_version: tuple[int, float] | None = None
        self._configs: asyncio.Queue[tuple[str, tuple[str, str | None, str], bytes]] | None = (
            asyncio.Queue() if settings.secure else None
        )

    def _shared(self, topic: str) -> str:
        group = self.settings.mqtt_share_group
        return f"$share/{group}/{topic}" if group else topic

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self, stop: asyncio.Event | None = None) -> None:
        async with self.sessions() as session:
            ids = list((await session.scalars(select(Device.id))).all())
        self._tasks = [asyncio.create_task(self._announce_loop(), name="homeassistant")]
        if self._configs is not None:
            self._tasks.append(asyncio.create_task(self._config_loop(), name="ha-configs"))
        await self.link.connect(stop)
        self.announce(ids)

    async def stop(self) -> None:
        for handle in self._info_due.values():
            handle.cancel()
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.link.close()

    def snapshot(self) -> dict[str, int]:
        return {**self.counters, "foreign_devices": len(self.foreign)}

    # ---- inbound --------------------------------------------------------------------

    def _on_message(
        self, topic: str, payload: bytes, qos: int, retain: bool
    ) -> Awaitable[None] | None:
        try:
            return self._route(topic, payload)
        except Exception:  # never let one message stop the link
            log.exception("Home Assistant bridge: handling %r failed", topic[:200])
            self.counters["errors"] += 1
            return None

    def _route(self, topic: str, payload: bytes) -> Awaitable[None] | None:
        if topic.startswith(self._events_prefix):
            self._on_event(topic, payload)
            return None
        if topic == self.topics.birth():
            if payload.strip().lower() == b"online":
                self.announce(self._ours)
                self._resend_availability()
            return None
        parsed = consume.parse_config_topic(self.topics.prefix, topic)
        if parsed is not None:
            if self._configs is not None:
                self._configs.put_nowait((topic, parsed, payload))
            else:
                self._on_config(topic, parsed, payload)
            return None
        command = self.topics.parse_command(topic)
        if command is not None:
            return self._on_ha_command(*command, payload)
        if topic.startswith("devices/") and topic.endswith("/commands"):
            device_id = topic.split("/")[1]
            if device_id in self.foreign:
                return self._on_foreign_command(device_id, payload)
            return None
        routes = self._state_routes.get(topic)
        if routes:
            self._on_foreign_state(routes, payload)
        availability = self._availability_routes.get(topic)
        if availability:
            self._on_foreign_availability(availability, payload)
        return None

    def _reject(self, reason: str, topic: str, detail: str) -> None:
        self.counters[f"rejected_{reason}"] += 1
        log.warning("Home Assistant bridge: rejected %r: %s", topic[:200], detail[:200])

    # ---- direction 1: our devices, announced to Home Assistant ----------------------

    def _on_event(self, topic: str, payload: bytes) -> None:
        try:
            event = orjson.loads(payload)
            event_type, device_id = event["type"], event["device_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.counters["rejected_event"] += 1
            return
        if not isinstance(device_id, str) or DEVICE_ID_RE.fullmatch(device_id) is None:
            return
        if event_type == EventType.DEVICE_STATUS:
            status = (event.get("payload") or {}).get("status")
            if status in (publish.AVAILABLE, publish.NOT_AVAILABLE):
                self._set_availability(device_id, status)
            return
        if event_type == EventType.DEVICE_DELETED:
            self._gone.add(device_id)
            self._due.discard(device_id)
            self._clear(device_id, set(self._ours.get(device_id, {})))
            self.link.publish(self.topics.availability(device_id), b"", retain=True)
            return
        if event_type == EventType.DEVICE_REGISTERED:
            self._gone.discard(device_id)
        self.announce([device_id])

    def announce(self, device_ids: Iterable[str]) -> None:
        """Publish (again) the configs of these devices, from the database."""
        self._due.update(device_ids)
        self._wake.set()

    async def _announce_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            due, self._due = self._due, set()
            try:
                async with self.sessions() as session:
                    rows = {
                        d.id: d
                        for d in (
                            await session.scalars(select(Device).where(Device.id.in_(due)))
                        ).all()
                    }
            except Exception as exc:  # noqa: BLE001 - tried again shortly
                log.warning("Home Assistant bridge: reading devices failed: %s", exc)
                self._due |= due
                await asyncio.sleep(1.0)
                self._wake.set()
                continue
            for device_id in sorted(due):
                row = rows.get(device_id)
                if row is None or device_id in self._gone:  # deleted: ours go
                    self._clear(device_id, set(self._ours.get(device_id, {})))
                    continue
                if row.type == publish.FOREIGN_TYPE:
                    continue  # it announces itself to Home Assistant
                self._publish_configs(view(row))
                if row.status in (publish.AVAILABLE, publish.NOT_AVAILABLE):
                    self._set_availability(device_id, row.status)

    def _publish_configs(self, device: DeviceView) -> None:
        configs = publish.configs(device, self.topics, __version__)
        held = self._ours.setdefault(device.id, {})
        for topic, config in configs.items():
            body = encode(config)
            if held.get(topic) != body:
                held[topic] = body
                self.link.publish(topic, body, retain=True)
                self.counters["configs_published"] += 1
        self._clear(device.id, set(held) - set(configs))

    def _clear(self, device_id: str, topics: set[str]) -> None:
        """An empty retained payload removes the entity from Home Assistant."""
        held = self._ours.get(device_id, {})
        for topic in sorted(topics):
            held.pop(topic, None)
            self.link.publish(topic, b"", retain=True)
            self.counters["configs_cleared"] += 1
        if not held:
            self._ours.pop(device_id, None)

    def _set_availability(self, device_id: str, status: str) -> None:
        self.link.publish(self.topics.availability(device_id), status, retain=True)

    def _resend_availability(self) -> None:
        self.announce(self._ours)  # the announce loop republishes availability too

    def _on_ours(self, topic: str, device_id: str, payload: bytes) -> None:
        """One of our configs, retained on the broker (from this worker, another one, or
        an earlier run): keep track of it, and look again at a device whose config is
        not what this worker would publish (deleted meanwhile, or changed)."""
        held = self._ours.setdefault(device_id, {})
        if not payload:
            held.pop(topic, None)
            return
        if held.get(topic) == payload:
            return
        held[topic] = payload
        self.announce([device_id])

    async def _ensure_service_user(self) -> None:
        """The service account Home Assistant's commands are made as, created with the
        operator role if missing. Nobody signs in with its password: it exists so the
        account is a user like any other, which an admin can demote or disable."""
        async with self._user_lock:
            if self._user_ensured:
                return
            async with self.sessions() as session:
                if await user_service.get_by_name(session, SERVICE_USER) is None:
                    try:
                        await user_service.create(
                            session,
                            username=SERVICE_USER,
                            password=generate_secret(),
                            role=Role.OPERATOR,
                        )
                        await session.commit()
                    except (IotpError, IntegrityError):  # another worker made it first
                        await session.rollback()
            self._user_ensured = True

    async def _service_user(self, session: AsyncSession) -> bool:
        """True while the service account's role lets it send commands."""
        user = await user_service.get_by_name(session, SERVICE_USER)
        return user is not None and not user.disabled and Role(user.role).allows(Role.OPERATOR)

    async def _on_ha_command(self, device_id: str, obj: str, payload: bytes) -> None:
        topic = self.topics.command(device_id, obj)
        now = time.time()
        await self._ensure_service_user()
        try:
            async with self.sessions.begin() as session:
                if not await self._service_user(session):
                    self._reject("command", topic, f"user {SERVICE_USER!r} may not send commands")
                    return
                device = await session.get(Device, device_id)
                if device is None or device.type == publish.FOREIGN_TYPE:
                    self._reject("command", topic, "no such device")
                    return
                command, params = publish.to_command(obj, payload, tuple(device.capabilities or ()))
                await command_service.issue(
                    session,
                    device=device,
                    command=command,
                    params=params,
                    source=COMMAND_SOURCE,
                    now=now,
                    publish_event=self._publish_event,
                )
        except (publish.CommandError, IotpError) as exc:
            self._reject("command", topic, str(exc))
            return
        self.counters["commands"] += 1
        self._kick([device_id])

    # ---- direction 2: devices that announce themselves ------------------------------

    async def _config_loop(self) -> None:
        assert self._configs is not None
        while True:
            topic, parsed, payload = await self._configs.get()
            try:
                await self._refresh_accounts()
            except Exception as exc:  # noqa: BLE001 - judged with the accounts known so far
                log.warning("Home Assistant bridge: reading broker accounts failed: %s", exc)
            try:
                self._on_config(topic, parsed, payload)
            except Exception:  # one config never stops the others
                log.exception("Home Assistant bridge: handling %r failed", topic[:200])
                self.counters["errors"] += 1

    async def _refresh_accounts(self) -> None:
        async with self.sessions() as session:
            version = await cred_service.version(session)
            if version == self._accounts_version:
                return
            snap = await cred_service.snapshot(session)
            rows = await discovery_accounts.accounts(session)
        self._accounts = {node: snap.foreign[node] for node in rows if node in snap.foreign}
        self._accounts_version = version

    def _on_config(self, topic: str, parsed: tuple[str, str | None, str], payload: bytes) -> None:
        component, node, obj = parsed
        if not payload:
            self._forget_entity(topic)
            owner = node if node and node in self._ours else None
            if owner is not None:
                self._on_ours(topic, owner, payload)
            return
        try:
            config = consume.load(payload)
        except consume.ConfigError as exc:
            self._reject("config", topic, str(exc))
            return
        if consume.is_ours(config):
            if node is not None and DEVICE_ID_RE.fullmatch(node):
                self._on_ours(topic, node, payload)
            return
        try:
            found = consume.announcement(component, node, obj, config, self._reserved)
        except consume.ConfigError as exc:
            self._reject("config", topic, str(exc))
            return
        entity = found.entity
        acl = self._accounts.get(node) if node is not None else None
        outside = consume.outside_account(entity, acl) if acl is not None else None
        if outside is not None:
            self._reject("config", topic, f"{outside} is not a topic of {node}'s account")
            return
        mapped = self._adapter_topic(entity)
        if mapped is not None:
            self.counters["left_to_adapter"] += 1
            log.info("Home Assistant bridge: %s is mapped by an adapter (%s)", topic[:200], mapped)
            return
        known = self._ours.get(entity.device_id)
        if known:
            self._reject("config", topic, f"{entity.device_id} is one of the platform's devices")
            return
        device = self.foreign.get(entity.device_id)
        new = device is None
        if device is None:
            device = consume.Device(entity.device_id, found.device_name)
            self.foreign[entity.device_id] = device
        device.name, device.model = found.device_name, found.model or device.model
        device.firmware = found.firmware or device.firmware
        self._forget_entity(topic)
        device.entities[topic] = entity
        if new:
            # Before any of its readings: the platform registers a device from its first
            # message, and takes the name only from an info it registers it with.
            self._publish_info(entity.device_id)
        if entity.state_topic and entity.template is None:
            self._reject("template", topic, "value_template is not one this platform reads")
        elif entity.state_topic:
            self._route_to(self._state_routes, entity.state_topic, entity)
        for availability in entity.availability:
            self._route_to(
                self._availability_routes,
                availability[0],
                (entity.device_id, availability[1], availability[2]),
            )
        self.counters["foreign_entities"] += 1
        self._schedule_info(entity.device_id)

    def _adapter_topic(self, entity: consume.Entity) -> str | None:
        """The entity's topic an adapter maps, if any."""
        filters = list(self._adapter_filters())
        topics = [entity.state_topic, entity.command_topic, *(a[0] for a in entity.availability)]
        for topic in topics:
            if topic and any(publish.covers(f, topic) for f in filters):
                return topic
        return None

    def _route_to(self, routes: dict[str, list[Any]], topic: str, item: Any) -> None:
        targets = routes.setdefault(topic, [])
        if item not in targets:
            targets.append(item)
        if len(targets) == 1:
            self.link.subscribe(self._shared(topic), qos=1)

    def _forget_entity(self, topic: str) -> None:
        for device in self.foreign.values():
            entity = device.entities.pop(topic, None)
            if entity is None:
                continue
            if entity.state_topic:
                routes = self._state_routes.get(entity.state_topic, [])
                if entity in routes:
                    routes.remove(entity)
            self._schedule_info(device.id)
            return

    def _schedule_info(self, device_id: str) -> None:
        previous = self._info_due.pop(device_id, None)
        if previous is not None:
            previous.cancel()
        loop = asyncio.get_running_loop()
        self._info_due[device_id] = loop.call_later(
            INFO_SETTLE_SECONDS, self._publish_info, device_id
        )

    def _publish_info(self, device_id: str) -> None:
        self._info_due.pop(device_id, None)
        device = self.foreign.get(device_id)
        if device is None:
            return
        info: dict[str, Any] = {
            "protocol": 1,
            "type": publish.FOREIGN_TYPE,
            "name": device.name,
            "capabilities": device.capabilities,
            "discovery": "homeassistant",
        }
        if device.firmware:
            info["firmware"] = device.firmware
        if device.model:
            info["model"] = device.model
        self.link.publish(device_topic(device_id, Kind.INFO), orjson.dumps(info), retain=True)
        self.counters["foreign_info"] += 1

    def _on_foreign_state(self, routes: list[consume.Entity], payload: bytes) -> None:
        metrics: dict[str, dict[str, float]] = {}
        relays: set[str] = set()
        for entity in routes:
            if entity.component == "switch":
                on = entity.switch_state(payload)
                if on is not None:
                    self._relays.setdefault(entity.device_id, {})[entity.object] = on
                    relays.add(entity.device_id)
                continue
            value = entity.metric(payload)
            if value is None:
                self.counters["foreign_state_unread"] += 1
                continue
            metrics.setdefault(entity.device_id, {})[entity.object] = value
        for device_id, values in metrics.items():
            self.link.publish(device_topic(device_id, Kind.DATA), orjson.dumps(values))
        for device_id in relays:
            state = {"relays": dict(self._relays[device_id])}
            self.link.publish(device_topic(device_id, Kind.STATE), orjson.dumps(state), retain=True)

    def _on_foreign_availability(self, routes: list[tuple[str, str, str]], payload: bytes) -> None:
        text = payload.decode("utf-8", "replace").strip()
        for device_id, available, not_available in routes:
            if text == available:
                status = "online"
            elif text == not_available:
                status = "offline"
            else:
                continue
            self.link.publish(device_topic(device_id, Kind.STATUS), status, retain=True)

    async def _on_foreign_command(self, device_id: str, payload: bytes) -> None:
        """A platform command for a foreign device: carried out on its command topic, and
        acknowledged for it once the broker has the message (the device itself does not
        acknowledge; its state topic shows the effect)."""
        command_id: Any = None
        command: Any = None
        params: Any = None
        try:
            message = orjson.loads(payload)
            command_id = message["id"]
            command = message["command"]
            params = message.get("params") or {}
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass
        if not isinstance(command_id, str) or not isinstance(params, dict):
            self._reject("foreign_command", device_topic(device_id, Kind.COMMANDS), "unreadable")
            return
        ack: dict[str, Any] = {"id": command_id}
        try:
            entity, body, result = consume.command_payload(
                self.foreign[device_id], command, params, self._relays.get(device_id, {})
            )
            assert entity.command_topic is not None
            await asyncio.wait_for(
                self.link.publish_confirmed(entity.command_topic, body),
                ACK_PUBLISH_TIMEOUT_SECONDS,
            )
        except consume.CommandError as exc:
            ack.update(status="error", error=str(exc))
        except (TimeoutError, ConnectionError) as exc:
            ack.update(status="error", error=f"could not publish to the device: {exc}")
        else:
            ack.update(status="ok", result=result)
            self.counters["foreign_commands"] += 1
        self.link.publish(device_topic(device_id, Kind.ACK), orjson.dumps(ack))

"""A fleet of simulated devices running the real firmware in one asyncio loop."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from iotp.simulator import firmware
from iotp.simulator.hal import Physics, SimHal, load_persisted

log = logging.getLogger("iotp.simulator")

CONNECT_RATE_PER_S = 400.0  # staggered start: new devices per second
REBOOT_DELAY_S = (1.0, 3.0)
SHUTDOWN_TIMEOUT_S = 10.0
WATCHDOG_SCAN_S = 5.0
READY_POLL_S = 0.2
FDS_PER_DEVICE = 1
FD_HEADROOM = 256
DEFAULT_SEED = 0
GAS_EVENTS_PER_HOUR = 0.1
UNREACHABLE_BROKER = ("127.0.0.1", 9)  # a "broken" firmware build never gets online


class SimulatorError(ValueError):
    pass


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
            raise SimulatorError(f"unsupported broker URL scheme: {parts.scheme}")
        tls = parts.scheme in ("mqtts", "ssl")
        if not parts.hostname:
            raise SimulatorError(f"no host in broker URL: {url}")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )


def node_mac(index: int, seed: int, id_prefix: str) -> bytes:
    """Deterministic MAC for device `index`: a locally administered unicast address."""
    digest = hashlib.sha256(f"{id_prefix}:{seed}:{index}".encode()).digest()
    return bytes([(digest[0] & 0xFC) | 0x02]) + digest[1:6]


def node_ids(devices: int, *, seed: int | None = None, id_prefix: str = "SIM") -> list[str]:
    """The node ids a fleet with these parameters uses, in device order."""
    return [mac.hex().upper() for mac in _macs(devices, seed, id_prefix)]


def _macs(devices: int, seed: int | None, id_prefix: str) -> list[bytes]:
    base = DEFAULT_SEED if seed is None else seed
    macs: list[bytes] = []
    seen: set[bytes] = set()
    salt = 0
    for index in range(devices):
        mac = node_mac(index, base, id_prefix)
        while mac in seen:  # 48-bit collisions are rare, but ids must be unique
            salt += 1
            mac = node_mac(index + salt * 1_000_003, base, id_prefix)
        seen.add(mac)
        macs.append(mac)
    return macs


def raise_fd_limit(wanted: int) -> int:
    """Raises the soft RLIMIT_NOFILE towards `wanted` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("open-file limit %d is below the %d this fleet needs", soft, wanted)
    return soft


@dataclass
class SimDevice:
    index: int
    node_id: str
    hal: SimHal
    rng: random.Random
    device: Any = None
    task: asyncio.Task[None] | None = None
    stopping: bool = False
    started: bool = False
    boots: int = 0
    crashes: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def version(self) -> str | None:
        return None if self.device is None else str(self.device.version)

    @property
    def connected(self) -> bool:
        mqtt = None if self.device is None else self.device.mqtt
        return mqtt is not None and bool(mqtt.connected)

    @property
    def credential_mode(self) -> str | None:
        """The firmware's credential state: open, own, request, pending or stopped."""
        creds = None if self.device is None else self.device.creds
        return None if creds is None else str(creds.mode)


async def signal_ready(
    devices: Sequence[Any], ready: asyncio.Event | None, stop: asyncio.Event
) -> None:
    """Sets `ready` once every device has been online (`started`)."""
    if ready is None:
        return
    while not stop.is_set():
        if all(sim.started for sim in devices):
            ready.set()
            log.info("all %d simulated devices are online", len(devices))
            return
        await asyncio.sleep(READY_POLL_S)


class Fleet:
    """N simulated devices. `run_simulation` is the usual way in; tests and the
    benchmark use this class for the extra knobs and the statistics."""

    def __init__(
        self,
        *,
        devices: int,
        broker_url: str,
        interval: float = 2.0,
        seed: int | None = None,
        id_prefix: str = "SIM",
        connect_rate: float = CONNECT_RATE_PER_S,
        gas_events_per_hour: float = GAS_EVENTS_PER_HOUR,
        config: dict[str, Any] | None = None,
        fleet_secret: str | None = None,
        credentials: dict[str, str] | None = None,
        ca_file: Path | None = None,
        state_dir: Path | None = None,
        ota_key: bytes | None = None,
    ) -> None:
        """Secure mode (docs/security.md): `fleet_secret` lets devices without
        credentials provision themselves; `credentials` gives devices (node id ->
        secret) their own; `ca_file` pins the broker's CA (needs an mqtts:// URL);
        `state_dir` keeps what devices stored (their credentials) across runs.
        `ota_key` is the key file devices are flashed with (`iotp firmware pubkey`):
        without it they refuse every OTA bundle."""
        if devices < 0:
            raise SimulatorError("devices must be >= 0")
        if not 0.5 <= interval <= 86400:
            raise SimulatorError("interval must be 0.5..86400 seconds")
        if connect_rate <= 0:
            raise SimulatorError("connect_rate must be > 0")
        self.broker = BrokerAddress.parse(broker_url)
        self.interval = interval
        self.connect_rate = connect_rate
        self.config = dict(config or {})
        self.credentials = dict(credentials or {})
        self.state_dir = state_dir
        if fleet_secret:
            self.config["fleet_secret"] = fleet_secret
        if ca_file is not None:
            if not self.broker.tls:
                raise SimulatorError("a CA file needs a TLS broker URL (mqtts://host:8883)")
            try:
                self.config["mqtt_ca"] = ca_file.read_text()
            except (OSError, UnicodeError) as exc:
                raise SimulatorError(f"cannot read the CA file {ca_file}: {exc}") from exc
        self._fw_device = firmware.module("device")
        self._fw_ota = firmware.module("ota")
        self._fw_install = firmware.module("install")
        self._builtin_version = firmware.builtin_version()
        base_seed = DEFAULT_SEED if seed is None else seed
        self.devices: list[SimDevice] = []
        for index, mac in enumerate(_macs(devices, seed, id_prefix)):
            rng = random.Random(f"{base_seed}:{index}")
            physics = Physics(
                rng=random.Random(f"{base_seed}:{index}:physics"),
                gas_events_per_hour=gas_events_per_hour,
            )
            node_id = mac.hex().upper()
            state_file = None if state_dir is None else state_dir / f"{node_id}.json"
            files = {"config.json": self._initial_config(index, id_prefix, node_id, state_file)}
            if ota_key is not None:
                files[self._fw_ota.KEY_FILE] = ota_key
            hal = SimHal(
                mac=mac,
                rng=rng,
                physics=physics,
                ip=f"198.51.100.{index % 254 + 1}",
                files=files,
                state_file=state_file,
            )
            self.devices.append(SimDevice(index=index, node_id=node_id, hal=hal, rng=rng))
        self.by_id = {sim.node_id: sim for sim in self.devices}

    def _initial_config(
        self, index: int, id_prefix: str, node_id: str, state_file: Path | None
    ) -> bytes:
        cfg: dict[str, Any] = {
            "name": f"{id_prefix}-{index + 1:05d}" if id_prefix else "",
            "interval": self.interval,
            "mqtt_host": self.broker.host,
            "mqtt_port": self.broker.port,
            "mqtt_tls": self.broker.tls,
            "wifi_ssid": "SimNet",
        }
        cfg.update(self.config)
        # what the device stored in an earlier run, then credentials handed in
        cfg.update(load_persisted(state_file))
        secret = self.credentials.get(node_id)
        if secret:
            cfg.update(mqtt_user=node_id, mqtt_password=secret, provision_secret="")
        return json.dumps(cfg).encode()

    # -- running --------------------------------------------------------------

    async def run(
        self, stop: asyncio.Event | None = None, ready: asyncio.Event | None = None
    ) -> None:
        stop = stop or asyncio.Event()
        raise_fd_limit(len(self.devices) * FDS_PER_DEVICE + FD_HEADROOM)
        log.info(
            "starting %d simulated devices against %s:%d",
            len(self.devices),
            self.broker.host,
            self.broker.port,
        )
        helpers = [
            asyncio.create_task(self._start_all(stop)),
            asyncio.create_task(self._watchdog(stop)),
            asyncio.create_task(self._signal_ready(ready, stop)),
        ]
        try:
            await stop.wait()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.shutdown()

    async def _start_all(self, stop: asyncio.Event) -> None:
        gap = 1.0 / self.connect_rate
        began = time.monotonic()
        for sim in self.devices:
            if stop.is_set():
                return
            sim.task = asyncio.create_task(self._lifecycle(sim))
            due = began + (sim.index + 1) * gap
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif sim.index % 50 == 0:
                await asyncio.sleep(0)

    async def _signal_ready(self, ready: asyncio.Event | None, stop: asyncio.Event) -> None:
        await signal_ready(self.devices, ready, stop)

    async def _lifecycle(self, sim: SimDevice) -> None:
        hal = sim.hal
        ota = self._fw_ota
        broker = self.broker
        while not sim.stopping:
            # what boot.py does on the chip: select the slot, install a staged update,
            # and select the slot it switched to
            ota.boot_select(hal)
            if self._fw_install.install_staged(hal, log=hal.log):
                ota.boot_select(hal)
            hal.power_on()
            version = ota.running_version(ota.load(hal), self._builtin_version)
            address: tuple[str, int] = (broker.host, broker.port)
            if "broken" in version:
                address = UNREACHABLE_BROKER
            device = self._fw_device.Device(
                hal, broker=(address[0], address[1], broker.user, broker.password), rand=sim.rng
            )
            sim.device = device
            sim.boots += 1
            waiter = asyncio.create_task(self._mark_started(sim, device))
            try:
                reason = await device.run()
            finally:
                waiter.cancel()
            sim.reasons.append(str(reason))
            if reason == "shutdown" or sim.stopping:
                return
            if reason == "crash":
                sim.crashes += 1
            await asyncio.sleep(sim.rng.uniform(*REBOOT_DELAY_S))

    @staticmethod
    async def _mark_started(sim: SimDevice, device: Any) -> None:
        # the firmware creates its MQTT client during boot; there is no event for it
        while device.mqtt is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await device.mqtt.up.wait()
        sim.started = True

    async def _watchdog(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(WATCHDOG_SCAN_S)
            now = time.monotonic()
            for sim in self.devices:
                if sim.device is not None and sim.hal.wdt_expired(now):
                    log.warning("%s: watchdog reset", sim.node_id)
                    sim.hal.wdt_last_feed = now
                    sim.device.crash()

    async def shutdown(self) -> None:
        """Every device publishes `offline` and disconnects cleanly."""
        tasks = []
        for sim in self.devices:
            sim.stopping = True
            if sim.device is not None:
                await sim.device.shutdown()
            if sim.task is not None:
                tasks.append(sim.task)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("device task failed: %r", task.exception())

    # -- inspection -----------------------------------------------------------

    def stats(self) -> dict[str, int]:
        connected = published = unacked = dropped = commands = 0
        pending = stopped = 0
        for sim in self.devices:
            device = sim.device
            if device is None:
                continue
            mode = sim.credential_mode
            pending += 1 if mode in ("request", "pending") else 0
            stopped += 1 if mode == "stopped" else 0
            published += int(device.seq)
            commands += int(device.commands_handled)
            mqtt = device.mqtt
            if mqtt is not None:
                connected += 1 if mqtt.connected else 0
                unacked += int(mqtt.unacked())
                dropped += int(mqtt.dropped)
        return {
            "devices": len(self.devices),
            "connected": connected,
            "published": published,
            "unacked": unacked,
            "dropped": dropped,
            "commands": commands,
            "provisioning": pending,
            "stopped": stopped,
        }


async def run_simulation(
    *,
    devices: int,
    broker_url: str,
    interval: float = 2.0,
    seed: int | None = None,
    id_prefix: str = "SIM",
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    connect_rate: float = CONNECT_RATE_PER_S,
    fleet_secret: str | None = None,
    credentials: dict[str, str] | None = None,
    ca_file: Path | None = None,
    state_dir: Path | None = None,
) -> None:
    """Runs `devices` simulated ESP32s with the real firmware until `stop` is set
    (or the task is cancelled), then shuts every device down cleanly.

    Node ids are deterministic for a (seed, id_prefix) pair; seed None means seed 0
    for the ids. `ready` is set once every device has been online. Secure mode: see
    `Fleet`.
    """
    fleet = Fleet(
        devices=devices,
        broker_url=broker_url,
        interval=interval,
        seed=seed,
        id_prefix=id_prefix,
        connect_rate=connect_rate,
        fleet_secret=fleet_secret,
        credentials=credentials,
        ca_file=ca_file,
        state_dir=state_dir,
    )
    await fleet.run(stop=stop, ready=ready)

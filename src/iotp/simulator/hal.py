"""Simulated hardware for the firmware: the same interface as firmware/iotfw/hal.py.

Physics, kept cheap enough for ten thousand devices in one process (state advances
lazily, only when a sensor is read):

- temperature follows a daily cycle (warmest mid-afternoon) towards which the room
  drifts with a time constant of ten minutes, plus noise; the fan pulls the target
  down a few degrees, the light warms it a little;
- humidity moves against temperature and the fan dries the room;
- gas sits at a per-device baseline and now and then a gas event (a leak) ramps it
  far above the alarm threshold; it decays again, faster with the fan on;
- the servo moves at a finite speed towards its commanded angle.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("iotp.simulator")

ROOM_TAU_S = 600.0
FAN_COOLING_C = 4.0
FAN_DRYING_PCT = 10.0
LIGHT_WARMING_C = 0.5
SERVO_DEG_PER_S = 300.0
DHT_FAILURE_RATE = 0.002
GAS_DECAY_TAU_S = 120.0
GAS_DECAY_TAU_FAN_S = 30.0
GAS_RAMP_S = 20.0
SECONDS_PER_DAY = 86400.0
MIN_STEP_S = 0.05
WARMEST_HOUR = 15.0


def _noise(rng: random.Random, scale: float) -> float:
    """Cheap bell-shaped noise (sum of two uniforms, standard deviation ~0.8*scale):
    random.gauss costs several times more, and there are thousands of rooms."""
    return (rng.random() + rng.random() - 1.0) * 2.0 * scale


@dataclass
class GasEvent:
    start: float
    peak: float
    hold_s: float


@dataclass
class Physics:
    """The room a simulated device sits in."""

    rng: random.Random
    gas_events_per_hour: float = 0.1
    base_temp: float = 0.0
    daily_amplitude: float = 0.0
    base_humidity: float = 0.0
    gas_baseline: float = 0.0
    temperature: float = 0.0
    humidity: float = 0.0
    gas: float = 0.0
    fan: bool = False
    light: bool = False
    event: GasEvent | None = None
    last: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        rng = self.rng
        self.base_temp = 21.0 + rng.uniform(-2.0, 3.0)
        self.daily_amplitude = rng.uniform(1.5, 4.0)
        self.base_humidity = rng.uniform(40.0, 60.0)
        self.gas_baseline = rng.uniform(80.0, 160.0)
        self.temperature = self._target_temperature(self.last) + rng.gauss(0.0, 0.5)
        self.humidity = self._target_humidity()
        self.gas = self.gas_baseline

    def _target_temperature(self, now: float) -> float:
        hour = (now % SECONDS_PER_DAY) / 3600.0
        daily = self.daily_amplitude * math.cos(2 * math.pi * (hour - WARMEST_HOUR) / 24.0)
        target = self.base_temp + daily
        if self.fan:
            target -= FAN_COOLING_C
        if self.light:
            target += LIGHT_WARMING_C
        return target

    def _target_humidity(self) -> float:
        target = self.base_humidity - 1.5 * (self.temperature - self.base_temp)
        if self.fan:
            target -= FAN_DRYING_PCT
        return min(100.0, max(5.0, target))

    def advance(self, now: float) -> None:
        dt = now - self.last
        if dt < MIN_STEP_S:  # read_climate and read_gas of one report share a step
            return
        self.last = now
        rng = self.rng
        pull = 1.0 - math.exp(-dt / ROOM_TAU_S)
        noise = math.sqrt(min(dt, 60.0))
        self.temperature += (self._target_temperature(now) - self.temperature) * pull
        self.temperature += _noise(rng, 0.03 * noise)
        self.humidity += (self._target_humidity() - self.humidity) * pull
        self.humidity = min(100.0, max(0.0, self.humidity + _noise(rng, 0.1 * noise)))
        self._advance_gas(now, dt)

    def _advance_gas(self, now: float, dt: float) -> None:
        rng = self.rng
        rate = self.gas_events_per_hour
        if self.event is None and rate > 0 and rng.random() < 1.0 - math.exp(-rate * dt / 3600):
            self.start_gas_event(now, rng.uniform(500.0, 900.0), rng.uniform(30.0, 240.0))
        event = self.event
        if event is not None:
            age = now - event.start
            if age < GAS_RAMP_S:
                self.gas = max(
                    self.gas,
                    self.gas_baseline + (event.peak - self.gas_baseline) * age / GAS_RAMP_S,
                )
            elif age < GAS_RAMP_S + event.hold_s:
                # the fan dilutes a leak but does not stop it
                self.gas = event.peak * (0.85 if self.fan else 1.0)
            else:
                self.event = None
        if self.event is None:
            tau = GAS_DECAY_TAU_FAN_S if self.fan else GAS_DECAY_TAU_S
            self.gas = self.gas_baseline + (self.gas - self.gas_baseline) * math.exp(-dt / tau)
        self.gas = max(0.0, self.gas + _noise(rng, 3.0))

    def start_gas_event(self, now: float, peak: float, hold_s: float) -> None:
        self.event = GasEvent(start=now, peak=peak, hold_s=hold_s)


class _MemoryWriter:
    def __init__(self, files: dict[str, bytes], path: str, keep: bool) -> None:
        self._files = files
        self._path = path
        self._keep = keep
        self._parts: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> int:
        self._size += len(data)
        if self._keep:
            self._parts.append(bytes(data))
        return len(data)

    def close(self) -> None:
        # an OTA slot's files are only counted, so a fleet-wide update stays cheap
        self._files[self._path] = b"".join(self._parts) if self._keep else b""


CONFIG_FILE = "config.json"
# What a simulated device keeps across simulator restarts (its flash is in memory):
# its MQTT credentials and a provisioning secret it is waiting to have approved.
PERSISTED_KEYS = ("mqtt_user", "mqtt_password", "provision_secret")


def load_persisted(state_file: Path | None) -> dict[str, Any]:
    """The credentials a device stored in an earlier run ({} if none or unreadable)."""
    if state_file is None or not state_file.is_file():
        return {}
    try:
        data = json.loads(state_file.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", state_file, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if k in PERSISTED_KEYS and isinstance(v, str)}


class SimHal:
    """One simulated ESP32: flash in memory, sensors from Physics, network always up."""

    network_static = True  # Wi-Fi is always joined; the MQTT link can still fail
    portal_dns = False
    portal_port = 80

    def __init__(
        self,
        *,
        mac: bytes,
        rng: random.Random,
        physics: Physics,
        ip: str,
        files: dict[str, bytes] | None = None,
        state_file: Path | None = None,
    ) -> None:
        self._mac = mac
        self.state_file = state_file
        self.status: str | None = None  # what the firmware shows on its status LED
        self.statuses: list[str] = []
        self.rng = rng
        self.physics = physics
        self._ip = ip
        self.files: dict[str, bytes] = dict(files or {})
        self.relays: dict[str, bool] = {}
        self.servo_target: int | None = None
        self.servo_from = 90.0
        self.servo_since = time.monotonic()
        self.boot_at = time.monotonic()
        self.boots = 0
        self.resets = 0
        self.wdt_timeout_s: float | None = None
        self.wdt_last_feed = time.monotonic()
        self.base_rssi = rng.randint(-80, -45)
        self.log_name = mac.hex().upper()

    # -- lifecycle (simulator only) -------------------------------------------

    def power_on(self) -> None:
        self.boots += 1
        self.boot_at = time.monotonic()
        self.wdt_timeout_s = None
        self.relays = {}

    def wdt_expired(self, now: float) -> bool:
        timeout = self.wdt_timeout_s
        return timeout is not None and now - self.wdt_last_feed > timeout

    def servo_position(self) -> float | None:
        if self.servo_target is None:
            return None
        moved = (time.monotonic() - self.servo_since) * SERVO_DEG_PER_S
        span = self.servo_target - self.servo_from
        if abs(span) <= moved:
            return float(self.servo_target)
        return self.servo_from + math.copysign(moved, span)

    # -- files ----------------------------------------------------------------

    def read_file(self, path: str) -> bytes | None:
        return self.files.get(path)

    def write_file(self, path: str, data: bytes | list[bytes]) -> None:
        """data: bytes, or a list of bytes (the firmware's config comes in pieces)."""
        data = b"".join(data) if isinstance(data, list) else bytes(data)
        self.files[path] = data
        if path == CONFIG_FILE and self.state_file is not None:
            self._persist(self.state_file, data)

    def _persist(self, state_file: Path, data: bytes) -> None:
        try:
            cfg = json.loads(data)
            keep = {k: cfg.get(k, "") for k in PERSISTED_KEYS}
            if keep == load_persisted(state_file):
                return
            state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(keep))
            tmp.chmod(0o600)
            os.replace(tmp, state_file)
        except (OSError, ValueError) as exc:
            log.warning("%s: cannot persist credentials: %s", self.log_name, exc)

    def open_write(self, path: str) -> _MemoryWriter:
        keep = not path.startswith(("slot_a/", "slot_b/"))
        return _MemoryWriter(self.files, path, keep)

    def open_read(self, path: str) -> io.BytesIO:
        data = self.files.get(path)
        if data is None:
            raise OSError(2, "no such file", path)
        return io.BytesIO(data)

    def remove(self, path: str) -> None:
        self.files.pop(path, None)

    def remove_tree(self, path: str) -> None:
        prefix = path.rstrip("/") + "/"
        for name in [n for n in self.files if n.startswith(prefix)]:
            del self.files[name]

    # -- identity, sensors, actuators -----------------------------------------

    def mac(self) -> bytes:
        return self._mac

    def setup(self, cfg: dict[str, Any]) -> None:
        self.relays = dict.fromkeys(cfg["relays"], False)

    def sensors(self) -> Iterable[str]:
        return ("temperature", "humidity", "gas")

    def read_climate(self) -> tuple[float, float]:
        physics = self.physics
        physics.advance(time.time())
        if self.rng.random() < DHT_FAILURE_RATE:
            raise OSError(116, "DHT22 timeout")
        return round(physics.temperature, 1), round(physics.humidity, 1)

    def read_gas(self) -> int:
        self.physics.advance(time.time())
        return round(self.physics.gas)

    def set_relay(self, name: str, on: bool) -> None:
        self.relays[name] = bool(on)
        if name == "fan":
            self.physics.advance(time.time())
            self.physics.fan = bool(on)
        elif name == "light":
            self.physics.advance(time.time())
            self.physics.light = bool(on)

    def set_servo(self, angle: int) -> None:
        position = self.servo_position()
        self.servo_from = 90.0 if position is None else position
        self.servo_since = time.monotonic()
        self.servo_target = angle

    # -- clock ----------------------------------------------------------------

    def time(self) -> float:
        return round(time.time(), 3)

    async def sync_time(self, host: str) -> bool:
        return True

    # -- network --------------------------------------------------------------

    # the HAL interface is shared with MicroPython, which has no asyncio.timeout
    async def wifi_connect(
        self,
        ssid: str,
        password: str,
        timeout: float,  # noqa: ASYNC109
    ) -> bool:
        return True

    def wifi_connected(self) -> bool:
        return True

    def wifi_scan(self) -> list[tuple[str, int]]:
        return [("SimNet", self.rssi()), ("Neighbour-5G", -83)]

    def ip(self) -> str:
        return self._ip

    def rssi(self) -> int:
        return self.base_rssi + self.rng.randint(-3, 3)

    async def ap_start(self, ssid: str) -> str:
        return "192.168.4.1"

    def ap_stop(self) -> None:
        return None

    # -- system ---------------------------------------------------------------

    def uptime(self) -> float:
        return round(time.monotonic() - self.boot_at, 1)

    def free_mem(self) -> int:
        return 110_000 + self.rng.randint(-4000, 4000)

    def reset(self) -> None:
        self.resets += 1

    def wdt_start(self, timeout_ms: int) -> None:
        self.wdt_timeout_s = timeout_ms / 1000.0
        self.wdt_last_feed = time.monotonic()

    def wdt_feed(self) -> None:
        self.wdt_last_feed = time.monotonic()

    def log(self, msg: str) -> None:
        # what a person watching the simulator wants to see: credentials going wrong
        if msg.startswith("MQTT stopped"):
            log.warning("%s: %s", self.log_name, msg)
        elif msg.startswith("provisioning:"):
            log.info("%s: %s", self.log_name, msg)
        else:
            log.debug("%s: %s", self.log_name, msg)

    def show_status(self, what: str) -> None:
        """The status LED: ok, provisioning, pending or stopped."""
        if what != self.status:
            self.statuses.append(what)
        self.status = what

    def random_bytes(self, n: int) -> bytes:
        return os.urandom(n)

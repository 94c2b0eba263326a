# The HAL of the MicroPython unix port: one simulated device per process (the
# simulator's `--runtime micropython`). Flash is the process's working directory
# (config.json, ota.json, slot_a/, slot_b/), sensors follow the same room model as
# the CPython simulator's HAL (src/iotp/simulator/hal.py), and the network is
# always up (the unix port has no `network` module; the MQTT link can still fail).
#
# The parent process reads the log from stdout (one line per message, status
# changes as "status <what>") and sends commands on stdin (see main.py).
import gc
import math
import os
import random
import sys
import time

from iotfw.flash import FileStorage

ROOM_TAU_S = 600.0
FAN_COOLING_C = 4.0
FAN_DRYING_PCT = 10.0
LIGHT_WARMING_C = 0.5
DHT_FAILURE_RATE = 0.002
GAS_DECAY_TAU_S = 120.0
GAS_DECAY_TAU_FAN_S = 30.0
GAS_RAMP_S = 20.0
GAS_EVENTS_PER_HOUR = 0.1
WARMEST_HOUR = 15.0
MIN_STEP_S = 0.05
RESET_EXIT = 75  # the parent starts the process again: a chip reset


def _noise(scale):
    return (random.random() + random.random() - 1.0) * 2.0 * scale


class Room:
    """Temperature with a daily cycle and a room lag, humidity against it, gas at a
    baseline with leaks now and then; fan and light act on them."""

    def __init__(self, gas_events_per_hour=GAS_EVENTS_PER_HOUR):
        self.rate = gas_events_per_hour
        self.base_temp = 21.0 + random.uniform(-2.0, 3.0)
        self.amplitude = random.uniform(1.5, 4.0)
        self.base_humidity = random.uniform(40.0, 60.0)
        self.gas_baseline = random.uniform(80.0, 160.0)
        self.fan = False
        self.light = False
        self.event = None  # (start, peak, hold_s)
        self.last = time.time()
        self.temperature = self._target_temperature(self.last) + _noise(0.5)
        self.humidity = self._target_humidity()
        self.gas = self.gas_baseline

    def _target_temperature(self, now):
        hour = (now % 86400) / 3600.0
        target = self.base_temp + self.amplitude * math.cos(
            2 * math.pi * (hour - WARMEST_HOUR) / 24.0)
        if self.fan:
            target -= FAN_COOLING_C
        if self.light:
            target += LIGHT_WARMING_C
        return target

    def _target_humidity(self):
        target = self.base_humidity - 1.5 * (self.temperature - self.base_temp)
        if self.fan:
            target -= FAN_DRYING_PCT
        return min(100.0, max(5.0, target))

    def advance(self, now):
        dt = now - self.last
        if dt < MIN_STEP_S:
            return
        self.last = now
        pull = 1.0 - math.exp(-dt / ROOM_TAU_S)
        noise = math.sqrt(min(dt, 60.0))
        self.temperature += (self._target_temperature(now) - self.temperature) * pull
        self.temperature += _noise(0.03 * noise)
        self.humidity += (self._target_humidity() - self.humidity) * pull
        self.humidity = min(100.0, max(0.0, self.humidity + _noise(0.1 * noise)))
        if (self.event is None and self.rate > 0
                and random.random() < 1.0 - math.exp(-self.rate * dt / 3600)):
            self.leak(now, random.uniform(500.0, 900.0), random.uniform(30.0, 240.0))
        if self.event is not None:
            start, peak, hold = self.event
            age = now - start
            if age < GAS_RAMP_S:
                self.gas = max(self.gas, self.gas_baseline
                               + (peak - self.gas_baseline) * age / GAS_RAMP_S)
            elif age < GAS_RAMP_S + hold:
                self.gas = peak * (0.85 if self.fan else 1.0)
            else:
                self.event = None
        if self.event is None:
            tau = GAS_DECAY_TAU_FAN_S if self.fan else GAS_DECAY_TAU_S
            self.gas = self.gas_baseline + (self.gas - self.gas_baseline) * math.exp(-dt / tau)
        self.gas = max(0.0, self.gas + _noise(3.0))

    def leak(self, now, peak, hold_s):
        self.event = (now, peak, hold_s)


class Hal(FileStorage):
    network_static = True  # no Wi-Fi to join: the link is up
    portal_dns = False

    def __init__(self, mac, portal_port=80, gas_events_per_hour=GAS_EVENTS_PER_HOUR):
        self._mac = mac
        self.portal_port = portal_port
        self.room = Room(gas_events_per_hour)
        self.relays = {}
        self.servo = None
        self.status = None
        self._boot = time.ticks_ms()
        self._wdt_ms = 0
        self._wdt_fed = self._boot

    # -- identity, sensors, actuators -----------------------------------------

    def mac(self):
        return self._mac

    def setup(self, cfg):
        self.relays = {}
        for name in cfg["relays"]:
            self.relays[name] = False

    def sensors(self):
        return ("temperature", "humidity", "gas")

    def read_climate(self):
        room = self.room
        room.advance(time.time())
        if random.random() < DHT_FAILURE_RATE:
            raise OSError(116)  # DHT22 timeout
        return round(room.temperature, 1), round(room.humidity, 1)

    def read_gas(self):
        self.room.advance(time.time())
        return int(self.room.gas + 0.5)

    def set_relay(self, name, on):
        self.relays[name] = bool(on)
        if name in ("fan", "light"):
            self.room.advance(time.time())
            setattr(self.room, name, bool(on))

    def set_servo(self, angle):
        self.servo = angle

    def show_status(self, what):
        if what != self.status:
            self.status = what
            self.log("status " + what)

    # -- clock ------------------------------------------------------------------

    def time(self):
        return time.time()

    async def sync_time(self, host):
        return True

    # -- network: always up ---------------------------------------------------

    async def wifi_connect(self, ssid, password, timeout):
        return True

    def wifi_connected(self):
        return True

    def wifi_scan(self):
        return [("SimNet", self.rssi())]

    def ip(self):
        return "127.0.0.1"

    def rssi(self):
        return -60 + random.randint(-3, 3)

    async def ap_start(self, ssid):
        return "127.0.0.1"

    def ap_stop(self):
        pass

    # -- system -----------------------------------------------------------------

    def uptime(self):
        return time.ticks_diff(time.ticks_ms(), self._boot) / 1000

    def free_mem(self):
        gc.collect()
        return gc.mem_free()

    def reset(self):
        pass  # main.py ends the process with RESET_EXIT once run() returns

    def wdt_start(self, timeout_ms):
        self._wdt_ms = timeout_ms
        self._wdt_fed = time.ticks_ms()

    def wdt_feed(self):
        self._wdt_fed = time.ticks_ms()

    def wdt_expired(self):
        return self._wdt_ms and time.ticks_diff(time.ticks_ms(), self._wdt_fed) > self._wdt_ms

    def random_bytes(self, n):
        return os.urandom(n)

    def log(self, msg):
        sys.stdout.write(msg + "\n")

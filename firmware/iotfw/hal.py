# Hardware abstraction for the ESP32 (MicroPython). Everything that touches
# hardware, the network interfaces, the clock or flash goes through this class;
# the simulator (src/iotp/simulator/hal.py) implements the same methods.
#
# Interface (both implementations):
#   files:    read_file(path) -> bytes|None, write_file(path, data) (data: bytes or a
#             list of bytes), open_write(path), open_read(path), remove(path),
#             remove_tree(path)
#   identity: mac() -> 6 bytes
#   pins:     setup(cfg), read_climate() -> (temp C, humidity %), read_gas() -> int,
#             set_relay(name, on), set_servo(angle), sensors() -> metric names
#   clock:    time() -> epoch seconds or None if unset, async sync_time(host) -> bool
#   network:  async wifi_connect(ssid, password, timeout) -> bool, wifi_connected(),
#             wifi_scan() -> [(ssid, rssi)], ip(), rssi(), async ap_start(ssid) -> ip,
#             ap_stop()
#   system:   uptime() -> s, free_mem() -> bytes|None, reset(), wdt_start(ms),
#             wdt_feed(), log(msg)
#   optional: show_status(what) with what in ok, provisioning, pending, stopped (a
#             status LED), random_bytes(n) (else os.urandom)
import asyncio
import gc
import time

import machine
import network

from iotfw.flash import FileStorage

# MicroPython ports differ in their epoch (1970 or 2000)
_EPOCH_OFFSET = 0 if time.gmtime(0)[0] == 1970 else 946684800
_MIN_VALID_TIME = 1577836800  # 2020-01-01: anything before means "clock not set"
DHT_MIN_INTERVAL_MS = 2000
GAS_SAMPLES = 8


class Hal(FileStorage):
    network_static = False
    portal_port = 80
    portal_dns = True

    def __init__(self):
        self._sta = network.WLAN(network.STA_IF)
        self._ap = network.WLAN(network.AP_IF)
        self._sta.active(True)
        self._wdt = None
        self._dht = None
        self._adc = None
        self._relays = {}
        self._active_low = False
        self._servo = None
        self._led = None
        self._last_dht = None
        self._last_dht_ms = 0
        self._boot_ms = time.ticks_ms()

    # -- identity -----------------------------------------------------------

    def mac(self):
        return self._sta.config("mac")

    # -- sensors and actuators ----------------------------------------------

    def setup(self, cfg):
        import dht

        if cfg["pin_dht"] >= 0:
            self._dht = dht.DHT22(machine.Pin(cfg["pin_dht"]))
        if cfg["pin_gas"] >= 0:
            self._adc = machine.ADC(machine.Pin(cfg["pin_gas"]))
            self._adc.atten(machine.ADC.ATTN_11DB)  # full 0..3.3 V range
        self._active_low = cfg["relay_active_low"]
        for name in cfg["relays"]:
            pin = cfg["relays"][name]
            if pin >= 0:
                self._relays[name] = machine.Pin(pin, machine.Pin.OUT)
        if cfg["pin_servo"] >= 0:
            self._servo = machine.PWM(machine.Pin(cfg["pin_servo"]), freq=50)
        if cfg.get("pin_led", -1) >= 0:
            self._led = machine.Pin(cfg["pin_led"], machine.Pin.OUT)

    def sensors(self):
        names = []
        if self._dht is not None:
            names.extend(("temperature", "humidity"))
        if self._adc is not None:
            names.append("gas")
        return names

    def read_climate(self):
        if self._dht is None:
            raise OSError("no DHT22")
        # the DHT22 must not be read more often than every 2 s
        if self._last_dht is None or time.ticks_diff(time.ticks_ms(),
                                                     self._last_dht_ms) >= DHT_MIN_INTERVAL_MS:
            self._dht.measure()
            self._last_dht = (self._dht.temperature(), self._dht.humidity())
            self._last_dht_ms = time.ticks_ms()
        return self._last_dht

    def read_gas(self):
        if self._adc is None:
            raise OSError("no gas sensor")
        total = 0
        for _ in range(GAS_SAMPLES):
            total += self._adc.read()
        return total // GAS_SAMPLES

    def set_relay(self, name, on):
        pin = self._relays.get(name)
        if pin is not None:
            pin.value(0 if on == self._active_low else 1)

    def set_servo(self, angle):
        if self._servo is not None:
            # 0.5 ms .. 2.5 ms pulse in a 20 ms period
            self._servo.duty_ns(500000 + angle * 2000000 // 180)

    def show_status(self, what):
        """The status LED (pin_led): on while the device cannot reach the platform as
        itself (provisioning, waiting for approval, or stopped: see the log)."""
        if self._led is not None:
            self._led.value(0 if what == "ok" else 1)

    # -- clock --------------------------------------------------------------

    def time(self):
        t = time.time() + _EPOCH_OFFSET
        return t if t >= _MIN_VALID_TIME else None

    async def sync_time(self, host):
        import ntptime

        ntptime.host = host
        ntptime.settime()  # blocking, about one UDP round trip
        return self.time() is not None

    # -- network ------------------------------------------------------------

    async def wifi_connect(self, ssid, password, timeout):
        sta = self._sta
        sta.active(True)
        if sta.isconnected():
            return True
        try:
            sta.disconnect()
        except OSError:
            pass
        sta.connect(ssid, password)
        start = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), start) < timeout * 1000:
            if sta.isconnected():
                return True
            await asyncio.sleep_ms(200)
        sta.disconnect()
        return False

    def wifi_connected(self):
        return self._sta.isconnected()

    def wifi_scan(self):
        self._sta.active(True)
        return [(n[0].decode("utf-8", "ignore"), n[3]) for n in self._sta.scan()]

    def ip(self):
        if self._sta.isconnected():
            return self._sta.ifconfig()[0]
        return None

    def rssi(self):
        try:
            return self._sta.status("rssi")
        except Exception:  # noqa: BLE001
            return None

    async def ap_start(self, ssid):
        self._ap.active(True)
        self._ap.config(essid=ssid, authmode=network.AUTH_OPEN)
        while not self._ap.active():
            await asyncio.sleep_ms(100)
        return self._ap.ifconfig()[0]

    def ap_stop(self):
        self._ap.active(False)

    # -- system -------------------------------------------------------------

    def uptime(self):
        return time.ticks_diff(time.ticks_ms(), self._boot_ms) / 1000

    def free_mem(self):
        gc.collect()
        return gc.mem_free()

    def reset(self):
        machine.reset()

    def wdt_start(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def log(self, msg):
        print(msg)


# Sensors, on-device automation and the clock: the device's main loop reads, automates
# and reports every interval, feeds the watchdog and keeps NTP time. Part of Device
# (device.py).
import asyncio

from iotfw import clock, payloads

SENSORS = ("temperature", "humidity", "gas")
NTP_RESYNC_S = 6 * 3600
NTP_RETRY_S = 60


class Sensing:
    async def _main_loop(self):
        wdt_ms = self.cfg.get("watchdog_ms")
        next_report = clock.now_ms()
        while True:
            now = clock.now_ms()
            if clock.diff_ms(now, next_report) >= 0:
                self.tick()
                period = int(self.cfg.get("interval") * 1000)
                next_report = clock.next_due(now, next_report, period)
            # the watchdog is fed only while every critical task is alive
            if self._healthy():
                self.hal.wdt_feed()
            self.loops += 1
            self._maybe_sync_clock()
            wait = clock.diff_ms(next_report, clock.now_ms())
            if wdt_ms:
                wait = min(wait, wdt_ms // 3)
            await asyncio.sleep(wait / 1000 if wait > 0 else 0)

    def read_sensors(self):
        readings = {}
        try:
            temp, hum = self.hal.read_climate()
            readings["temperature"] = temp
            readings["humidity"] = hum
        except Exception:  # noqa: BLE001 - DHT22 read errors are common; skip the sample
            self.sensor_errors += 1
        try:
            readings["gas"] = self.hal.read_gas()
        except Exception:  # noqa: BLE001
            self.sensor_errors += 1
        return readings

    def local_minute(self):
        ts = self.hal.time()
        if ts is None:
            return None
        return int((ts + self.cfg.get("tz_offset") * 60) % 86400) // 60

    def tick(self):
        """One report: read, automate, publish. Never raises."""
        try:
            readings = self.read_sensors()
            self.last_readings = readings
            actions, events = self.automation.step(readings, self.local_minute(), self.relays)
            for name, state, _reason in actions:
                self._set_relay(name, state)
            if actions:
                self.publish_state()
            for event in events:
                self.emit(event)
            if readings:
                self.publish("data", payloads.data(readings, self.seq, self.hal.time()))
                self.seq += 1
                if self.webhook.wants("data"):
                    self.webhook.notify("data", readings)
        except Exception as exc:  # noqa: BLE001 - the loop must survive anything
            self.log("tick failed: %r" % (exc,))

    def _maybe_sync_clock(self):
        if self._ntp_busy or not self.hal.wifi_connected():
            return
        last = self._last_ntp
        have = self.hal.time() is not None
        if last is not None:
            age = clock.since_ms(last) / 1000
            if age < (NTP_RESYNC_S if have else NTP_RETRY_S):
                return
        elif have and getattr(self.hal, "network_static", False):
            return
        self._ntp_busy = True
        self._last_ntp = clock.now_ms()
        self._spawn(self._sync_clock())

    async def _sync_clock(self):
        try:
            await self.hal.sync_time(self.cfg.get("ntp_host"))
        except Exception as exc:  # noqa: BLE001
            self.log("ntp failed: %r" % (exc,))
        finally:
            self._ntp_busy = False

    def _set_relay(self, name, state):
        self.hal.set_relay(name, state)
        self.relays[name] = state

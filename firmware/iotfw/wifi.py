# Wi-Fi station mode: join with capped exponential backoff and jitter; after
# wifi_max_failures failed attempts in a row the device falls back to the setup
# access point (see portal.py).
import asyncio

from iotfw.backoff import Backoff

CHECK_INTERVAL = 5
JOIN_TIMEOUT = 20


class Station:
    def __init__(self, hal, cfg, log=None, backoff=None):
        self.hal = hal
        self.cfg = cfg
        self.log = log
        self.backoff = backoff or Backoff(base=2.0, cap=120.0)
        self.failures = 0
        self.up = asyncio.Event()

    async def join(self):
        """One attempt; returns True when connected."""
        ok = False
        try:
            ok = await self.hal.wifi_connect(self.cfg.get("wifi_ssid"),
                                             self.cfg.get("wifi_password"), JOIN_TIMEOUT)
        except Exception as exc:  # noqa: BLE001
            if self.log:
                self.log("wifi join failed: %r" % (exc,))
        if ok:
            self.failures = 0
            self.backoff.reset()
            self.up.set()
        else:
            self.failures += 1
            self.up.clear()
        return ok

    async def keep(self):
        """Keeps the station connected. Returns when it should give up (portal)."""
        limit = self.cfg.get("wifi_max_failures")
        while True:
            if self.hal.wifi_connected():
                self.up.set()
                await asyncio.sleep(CHECK_INTERVAL)
                continue
            self.up.clear()
            if await self.join():
                continue
            if self.failures >= limit:
                if self.log:
                    self.log("wifi: %d failures, falling back to setup mode" % self.failures)
                return
            await asyncio.sleep(self.backoff.next_delay())

# The device: boots from config, keeps Wi-Fi and the MQTT link up, reads sensors,
# runs automation, answers commands, does OTA. Hardware is reached only through
# the HAL object given to it (hal.py on the ESP32, a simulated one in iotp.simulator).
#
# One class, one module per concern: link.py (MQTT link and credentials),
# handlers.py (commands), sensing.py (sensors, automation, clock); the rarely used
# parts (setup portal, Wi-Fi station, OTA: maint.py; provisioning: enrol.py) are
# imported only when needed and unloaded after, to keep the heap free.
import asyncio

from iotfw import (DEVICE_TYPE, VERSION, automation, commands, identity, ota, payloads,
                   settings)
from iotfw.handlers import BUILTIN, RARE, Commands
from iotfw.link import Link
from iotfw.sensing import SENSORS, Sensing
from iotfw.webhook import Webhook

MIN_FREE_MEM = 8192


class Device(Link, Commands, Sensing):
    def __init__(self, hal, broker=None, log=None, rand=None):
        """broker: optional (host, port, user, password) overriding the config."""
        self.hal = hal
        self.broker = broker
        self.log = log or hal.log
        self.rand = rand
        self.custom = {}
        self.node_id = identity.node_id_from_mac(hal.mac())
        self.cfg = settings.Config(hal)
        self.version = VERSION
        self.relays = {}
        self.servo = None
        self.seq = 0
        self.mqtt = None
        self.creds = None  # provision.Credentials: which account, provisioning state
        self.prov_link = None  # the MQTT client of a provisioning exchange
        self.link_status = None
        self._tls_ctx = None
        self._relink = asyncio.Event()
        self._refusal_backoff = None
        self.automation = None
        self.webhook = None
        self.ota_state = None
        self.ota_busy = False
        # an update's download buffer, taken as the device starts while the heap is
        # whole: after hours of messages the heap may hold 10 KB free and no 1 KB in
        # one piece
        self.ota_buf = bytearray(1024)
        self.loops = 0
        self.commands_handled = 0
        self.commands_running = 0
        self.recent = commands.Recent()  # repeated deliveries get the first answer
        self.ignored_messages = 0
        self.sensor_errors = 0
        self.last_readings = {}
        self._reason = None
        self._done = asyncio.Event()
        self._tasks = []
        self._critical = []
        self._last_ntp = None
        self._ntp_busy = False
        self._t = {}

    # -- extension point ----------------------------------------------------

    def register_command(self, name, handler):
        """handler(device, params) -> result dict (or a coroutine giving one).

        Raise ValueError with a message to send an error ack.
        """
        if name in BUILTIN or name in RARE:
            raise ValueError("built-in command: " + name)
        self.custom[name] = handler

    # -- boot and run -------------------------------------------------------

    def boot(self):
        self.cfg.load()
        for err in self.cfg.load_errors:
            self.log("config: " + err)
        cfg = self.cfg.data
        if cfg["mqtt_tls"]:
            # the TLS context (~3 KB in one piece on MicroPython) is taken first, while
            # the heap still has room in one piece; it serves every connection after
            self._tls()
        self.ota_state = ota.load(self.hal)
        self.version = ota.running_version(self.ota_state, VERSION)
        self.hal.setup(cfg)
        self.relays = {}
        for name in cfg["relays"]:
            self.relays[name] = False
            self.hal.set_relay(name, False)
        if cfg["pin_servo"] >= 0:
            self.servo = 90
            self.hal.set_servo(90)
        self.automation = automation.Automation(cfg["automation"])
        self.webhook = Webhook(self.node_id, cfg["webhook"], self.log)
        self._t = {}
        for leaf in ("data", "status", "info", "state", "events", "commands", "ack"):
            self._t[leaf] = payloads.topic(self.node_id, leaf)

    async def run(self):
        """Boots and runs until a reboot or shutdown is asked for; returns the reason.

        On the ESP32 a reboot resets the chip and this never returns.
        """
        self._done = asyncio.Event()
        self._reason = None
        self.boot()
        cfg = self.cfg.data
        if cfg["watchdog_ms"]:
            self.hal.wdt_start(cfg["watchdog_ms"])
        if self.broker is None and not self.cfg.provisioned():
            await self._run_portal()
            return await self._finish()
        self._spawn(self._main_loop(), critical=True)
        station_lost = None
        if not getattr(self.hal, "network_static", False):
            from iotfw import maint

            station_lost = self._spawn(maint.station(self), critical=True)
        self._start_mqtt()
        trial = self.ota_state.get("trial")
        if trial:
            from iotfw import maint

            self._spawn(maint.ota_trial_timer(self, cfg["ota_confirm_timeout"]))
        await self._done.wait()
        if self._reason == "portal" and station_lost is not None:
            await self._stop_tasks()
            await self._run_portal(retry_after=maint.PORTAL_RETRY_S)
        return await self._finish()

    async def _run_portal(self, retry_after=None):
        from iotfw import maint

        await maint.run_portal(self, retry_after)

    def request_reboot(self, reason="reboot"):
        if self._reason is None:
            self._reason = reason
        self._done.set()

    async def shutdown(self):
        """Clean stop: publishes offline, disconnects, stops all tasks."""
        self.request_reboot("shutdown")

    def crash(self):
        """Power loss / watchdog reset: the connection drops without a goodbye."""
        if self.mqtt is not None:
            self.mqtt.kill()
        self.request_reboot("crash")

    async def _finish(self):
        if self.prov_link is not None:
            self.prov_link.kill()
        if self._reason == "crash":
            await self._stop_tasks()
            if self.mqtt is not None:
                self.mqtt.kill()
                await self.mqtt.close(timeout=0)
            self.hal.reset()
            return "crash"
        if self.mqtt is not None and self.mqtt.connected:
            self.mqtt.publish(self._t["status"], b"offline", 1, True)
            await self.mqtt.close(timeout=2.0)
        elif self.mqtt is not None:
            await self.mqtt.close(timeout=0)
        await self._stop_tasks()
        reason = self._reason or "reboot"
        if reason != "shutdown":
            self.hal.reset()
        return reason

    async def _stop_tasks(self):
        tasks = self._tasks
        self._tasks = []
        self._critical = []
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except BaseException:  # noqa: BLE001, S110 - cancelled or already failed
                pass

    def _spawn(self, coro, critical=False):
        # a finished task goes from the list: it holds its coroutine, and that what the
        # coroutine last referred to (an update's buffers, until the next update)
        tasks = self._tasks
        for i in range(len(tasks) - 1, -1, -1):
            if tasks[i].done() and tasks[i] not in self._critical:
                tasks.pop(i)
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        if critical:
            self._critical.append(task)
        return task

    def _healthy(self):
        for task in self._critical:
            if task.done():
                return False
        free = self.hal.free_mem()
        return free is None or free >= MIN_FREE_MEM

    # -- publishing ---------------------------------------------------------

    def publish(self, leaf, obj, retain=False):
        if self.mqtt is None:
            return False
        try:
            data = payloads.encode(obj)
        except ValueError as exc:
            self.log("not published on %s: %s" % (leaf, exc))
            return False
        return self.mqtt.publish(self._t[leaf], data, 1, retain)

    def ack(self, msg):
        self.recent.finish(msg)
        self.publish("ack", msg)

    def publish_state(self):
        self.publish("state", self.state(), retain=True)

    def emit(self, event):
        if "ts" not in event:
            ts = self.hal.time()
            if ts is not None:
                event["ts"] = ts
        self.publish("events", event)
        self.webhook.notify(event["event"], event)

    # -- reports ------------------------------------------------------------

    def sensors(self):
        return self.hal.sensors() if hasattr(self.hal, "sensors") else SENSORS

    def capabilities(self):
        return payloads.capabilities(self.sensors(), self.relays, self.servo is not None,
                                     sorted(self.custom))

    def info(self):
        mac = identity.mac_text(self.hal.mac())
        return payloads.info(DEVICE_TYPE, self.version, self.capabilities(),
                             self.cfg.get("interval"), mac, ip=self.hal.ip(),
                             rssi=self.hal.rssi(), name=self.cfg.get("name"),
                             units=payloads.units(self.sensors()))

    def state(self):
        return {"relays": dict(self.relays), "servo": self.servo,
                "automation": dict(self.automation.settings),
                "gas_alarm": self.automation.gas_alarm,
                "config": {"interval": self.cfg.get("interval")}}

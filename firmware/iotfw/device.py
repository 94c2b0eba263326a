# The device: boots from config, keeps Wi-Fi and the MQTT link up, reads sensors,
# runs automation, answers commands, does OTA. Hardware is reached only through
# the HAL object given to it (hal.py on the ESP32, a simulated one in iotp.simulator).
import asyncio

from iotfw import (DEVICE_TYPE, VERSION, automation, clock, commands, identity, ota,
                   payloads, provision, settings, tls)
from iotfw.backoff import Backoff
from iotfw.commands import CommandError
from iotfw.mqtt import MQTTClient
from iotfw.webhook import Webhook

SENSORS = ("temperature", "humidity", "gas")
NTP_RESYNC_S = 6 * 3600
NTP_RETRY_S = 60
PORTAL_RETRY_S = 600  # with stored credentials, retry station mode this often
MIN_FREE_MEM = 8192
REFUSAL_BACKOFF_BASE_S = 1.0  # pause after a refused login before the next account
_ASYNC = object()  # a handler that sends its own final ack


class Device:
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
        self.loops = 0
        self.commands_handled = 0
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
        self._handlers = {
            "relay": self._cmd_relay, "servo": self._cmd_servo, "reboot": self._cmd_reboot,
            "set_config": self._cmd_set_config, "automation": self._cmd_automation,
            "ota": self._cmd_ota, "webhook": self._cmd_webhook, "ping": self._cmd_ping,
        }

    # -- extension point ----------------------------------------------------

    def register_command(self, name, handler):
        """handler(device, params) -> result dict (or a coroutine giving one).

        Raise ValueError with a message to send an error ack.
        """
        if name in self._handlers:
            raise ValueError("built-in command: " + name)
        self.custom[name] = handler

    # -- boot and run -------------------------------------------------------

    def boot(self):
        self.cfg.load()
        for err in self.cfg.load_errors:
            self.log("config: " + err)
        self.ota_state = ota.load(self.hal)
        self.version = ota.running_version(self.ota_state, VERSION)
        cfg = self.cfg.data
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
            from iotfw.wifi import Station

            station = Station(self.hal, self.cfg, self.log)
            station_lost = self._spawn(self._station(station), critical=True)
        self._start_mqtt()
        trial = self.ota_state.get("trial")
        if trial:
            self._spawn(self._ota_trial_timer(cfg["ota_confirm_timeout"]))
        await self._done.wait()
        if self._reason == "portal" and station_lost is not None:
            await self._stop_tasks()
            await self._run_portal(retry_after=PORTAL_RETRY_S)
        return await self._finish()

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

    # -- Wi-Fi and portal ---------------------------------------------------

    async def _station(self, station):
        await station.keep()
        # too many failures: fall back to the setup access point
        self.request_reboot("portal")

    async def _run_portal(self, retry_after=None):
        from iotfw.portal import Portal, dns_server

        ssid = identity.setup_ssid(self.hal.mac())
        ip = await self.hal.ap_start(ssid)
        self.log("setup mode: join Wi-Fi %s and open http://%s/" % (ssid, ip))
        portal = Portal(self.hal, self.cfg, self.node_id,
                        lambda: self.request_reboot("provisioned"), self.log)
        await portal.start(port=getattr(self.hal, "portal_port", 80))
        stop_dns = asyncio.Event()
        dns = None
        if getattr(self.hal, "portal_dns", True):
            dns = asyncio.create_task(dns_server(ip, stop_dns))
        self._done = asyncio.Event()
        self._reason = None
        waited = 0
        try:
            while not self._done.is_set():
                self.hal.wdt_feed()
                await asyncio.sleep(1)
                waited += 1
                if retry_after and waited >= retry_after and not portal.saved:
                    self.request_reboot("portal_timeout")
            await asyncio.sleep(1)  # let the browser get its answer
        finally:
            stop_dns.set()
            if dns is not None:
                dns.cancel()
            await portal.stop()
            self.hal.ap_stop()

    # -- MQTT ---------------------------------------------------------------

    def _broker_address(self):
        if self.broker is not None:
            return self.broker[0], self.broker[1]
        cfg = self.cfg.data
        return cfg["mqtt_host"], cfg["mqtt_port"]

    def _credential_settings(self):
        cfg = self.cfg.data
        if self.broker is not None and self.broker[2] is not None:
            # credentials handed in (simulator --broker mqtt://user:pass@...) win
            view = dict(cfg)
            view["mqtt_user"], view["mqtt_password"] = self.broker[2], self.broker[3] or ""
            return view
        return cfg

    def _tls(self):
        """ssl= for the MQTT clients: False, True, or a context pinning mqtt_ca."""
        cfg = self.cfg.data
        if not cfg["mqtt_tls"]:
            return False
        if self._tls_ctx is None:
            self._tls_ctx = tls.client_context(cfg["mqtt_ca"] or None)
        return self._tls_ctx

    def _save(self, updates):
        if updates:
            try:
                self.cfg.update(updates)
            except Exception as exc:  # noqa: BLE001 - keep going with what is in memory
                self.log("storing credentials failed: %r" % (exc,))

    def _new_secret(self):
        rnd = getattr(self.hal, "random_bytes", None)
        if rnd is None:
            import os

            rnd = os.urandom
        return provision.new_secret(rnd)

    def _start_mqtt(self):
        cfg = self.cfg.data
        host, port = self._broker_address()
        self.creds = provision.Credentials(self.node_id, self._new_secret)
        self._save(self.creds.configure(self._credential_settings()))
        user, password = self.creds.login()
        rand = self.rand
        self.mqtt = MQTTClient(
            self.node_id, host, port, user, password, keepalive=cfg["mqtt_keepalive"],
            will=(self._t["status"], b"offline", 1, True), ssl=self._tls(),
            on_connect=self._on_connect, on_message=self._on_message,
            backoff=Backoff(base=1.0, cap=60.0, rand=rand.random if rand else None),
            log=self.log, on_refused=self._on_refused)
        self.mqtt.subscribe(self._t["commands"], 1)
        self._refusal_backoff = Backoff(base=REFUSAL_BACKOFF_BASE_S, cap=60.0,
                                        rand=rand.random if rand else None)
        self._spawn(self._link(), critical=True)

    # -- credentials and provisioning (secure mode, iotfw/provision.py) ------

    async def _link(self):
        """Keeps the device's MQTT link up with the right account: its own
        credentials, or provisioning with the fleet secret first. Never returns (a
        stopped device keeps measuring and automating offline)."""
        creds = self.creds
        while True:
            if creds.stopped():
                self._show_status("stopped")
                self.log("MQTT stopped: " + creds.reason)
                self._relink.clear()
                await self._relink.wait()  # new settings (or a reboot) start over
                continue
            if creds.provisioning():
                self._show_status("provisioning")
                await self._provision()
            else:
                m = self.mqtt
                m.user, m.password = creds.login()
                await m.run()  # returns when the login was refused and must change
                if m.closed:  # the device is shutting down
                    return
            if not creds.stopped() and creds.refusals:
                await asyncio.sleep(self._refusal_backoff.next_delay())

    def _on_refused(self, rc):
        """The device's own (or anonymous, or probing) login was refused."""
        creds = self.creds
        was = creds.login()
        self._save(creds.refused(rc))
        return creds.stopped() or creds.provisioning() or creds.login() != was

    def _credentials_ok(self):
        self._save(self.creds.connected())
        self._refusal_backoff.reset()
        self._show_status("ok")

    async def _provision(self):
        """Asks the platform for approval with the fleet secret until approved (then
        the device logs in as itself) or stopped; waiting never blocks the device."""
        creds = self.creds
        node = self.node_id
        host, port = self._broker_address()
        leave = asyncio.Event()
        user, fleet = creds.login()

        def ask():
            link.publish(provision.request_topic(node), provision.request_payload(creds.secret), 1)
            creds.asked()

        def on_connect():
            creds.connected()
            ask()

        def on_message(topic, payload):
            before = creds.mode
            self._save(creds.answer(payload))
            if creds.mode != before and creds.mode == provision.PENDING:
                self._show_status("pending")
                self.log("provisioning: waiting for approval of %s" % node)
            if not creds.provisioning():
                if creds.mode == provision.OWN:
                    self.log("provisioning: approved, connecting as %s" % node)
                leave.set()

        def on_refused(rc):
            self._save(creds.refused(rc))
            if not creds.provisioning():
                leave.set()
                return True
            return False

        rand = self.rand
        link = MQTTClient(
            node, host, port, user, fleet, keepalive=self.cfg.get("mqtt_keepalive"),
            ssl=self._tls(), on_connect=on_connect, on_message=on_message,
            on_refused=on_refused, max_queue=2,
            backoff=Backoff(base=1.0, cap=60.0, rand=rand.random if rand else None),
            log=self.log)
        link.subscribe(provision.response_topic(node), 1)
        self.prov_link = link
        runner = asyncio.create_task(link.run())
        try:
            while not leave.is_set() and not runner.done():
                try:
                    await asyncio.wait_for(leave.wait(), creds.ask_delay())
                except asyncio.TimeoutError:
                    if link.connected:
                        ask()  # the answer is not retained: ask again now and then
        finally:
            self.prov_link = None
            await link.close(timeout=0.5)
            try:
                await runner
            except Exception:  # noqa: BLE001, S110 - it never raises; be sure
                pass

    def _show_status(self, what):
        """ok, provisioning, pending or stopped: on a status LED where the HAL has one."""
        self.link_status = what
        show = getattr(self.hal, "show_status", None)
        if show is not None:
            try:
                show(what)
            except Exception:  # noqa: BLE001, S110 - a LED never stops the device
                pass

    def _on_connect(self):
        m = self.mqtt
        self._credentials_ok()
        # info first: a platform registers a new device from the first message it
        # sees, and only info carries the suggested name
        m.publish(self._t["info"], payloads.encode(self.info()), 1, True)
        m.publish(self._t["status"], b"online", 1, True)
        m.publish(self._t["state"], payloads.encode(self.state()), 1, True)
        # results of an OTA update that finished (or rolled back) across a reboot
        if self.ota_state.get("trial"):
            ota.confirm(self.ota_state)
            ota.save(self.hal, self.ota_state)
        for res in ota.take_results(self.hal, self.ota_state):
            if res["status"] == "ok":
                self.ack(payloads.ack_ok(res["id"], {"version": res["version"]}))
            else:
                self.ack(payloads.ack_error(res["id"], res["error"]))
        self.webhook.notify("online", {"firmware": self.version})
        if m.connects == 1:
            self.webhook.notify("boot", {"firmware": self.version})

    def _on_message(self, topic, payload):
        if topic != self._t["commands"]:
            self.ignored_messages += 1
            return
        asyncio.create_task(self.handle_command(payload))

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

    def capabilities(self):
        sensors = self.hal.sensors() if hasattr(self.hal, "sensors") else SENSORS
        return payloads.capabilities(sensors, self.relays, self.servo is not None,
                                     sorted(self.custom))

    def info(self):
        mac = identity.mac_text(self.hal.mac())
        return payloads.info(DEVICE_TYPE, self.version, self.capabilities(),
                             self.cfg.get("interval"), mac, ip=self.hal.ip(),
                             rssi=self.hal.rssi(), name=self.cfg.get("name"))

    def state(self):
        return {"relays": dict(self.relays), "servo": self.servo,
                "automation": dict(self.automation.settings),
                "gas_alarm": self.automation.gas_alarm,
                "config": {"interval": self.cfg.get("interval")}}

    # -- main loop ----------------------------------------------------------

    async def _main_loop(self):
        wdt_ms = self.cfg.get("watchdog_ms")
        next_report = clock.now_ms()
        while True:
            now = clock.now_ms()
            if clock.diff_ms(now, next_report) >= 0:
                self.tick()
                next_report += int(self.cfg.get("interval") * 1000)
                if clock.diff_ms(now, next_report) > 0:
                    next_report = now  # fell behind: do not try to catch up
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

    # -- commands -----------------------------------------------------------

    async def handle_command(self, payload):
        """Parses, runs and acknowledges one command. Never raises."""
        cid = None
        try:
            cmd = commands.parse(payload)
            cid = cmd["id"]
            first = self.recent.begin(cid)
            if first is not None:  # delivered again: answer again, do not run again
                if first is not commands.Recent.RUNNING:
                    self.publish("ack", first)
                return
            handler = self._handlers.get(cmd["command"])
            if handler is not None:
                result = handler(cid, cmd["params"])
            elif cmd["command"] in self.custom:
                result = self.custom[cmd["command"]](self, cmd["params"])
            else:
                raise CommandError(cid, "unknown command: " + cmd["command"])
            if hasattr(result, "send"):  # a coroutine (custom async handlers)
                result = await result
            if result is not _ASYNC:
                self.ack(payloads.ack_ok(cid, result))
            self.commands_handled += 1
            self.webhook.notify("command", {"id": cid, "command": cmd["command"]})
        except CommandError as exc:
            self.ack(payloads.ack_error(exc.command_id, exc.message))
        except (ValueError, TypeError, KeyError) as exc:
            self.ack(payloads.ack_error(cid, str(exc) or repr(exc)))
        except Exception as exc:  # noqa: BLE001 - a command never crashes the device
            self.log("command failed: %r" % (exc,))
            self.ack(payloads.ack_error(cid, "internal error: %r" % (exc,)))

    def _cmd_relay(self, cid, params):
        name, state = commands.relay_params(cid, params, self.relays)
        if state == "toggle":
            state = not self.relays[name]
        refused = self.automation.refuse_manual(name, state)
        if refused:
            raise CommandError(cid, refused)
        self._set_relay(name, state)
        self.publish_state()
        return {"name": name, "state": state}

    def _cmd_servo(self, cid, params):
        if self.servo is None:
            raise CommandError(cid, "no servo configured")
        angle = commands.servo_params(cid, params)
        self.hal.set_servo(angle)
        self.servo = angle
        self.publish_state()
        return {"angle": angle}

    def _cmd_reboot(self, cid, params):
        delay = commands.reboot_params(cid, params)
        self._spawn(self._reboot_later(delay))
        return {}

    async def _reboot_later(self, delay):
        await asyncio.sleep(delay + 0.2)
        self.request_reboot("reboot")

    def _cmd_set_config(self, cid, params):
        if not params:
            raise CommandError(cid, "no config keys given")
        try:
            changed = self.cfg.update(params)
        except settings.ConfigError as exc:
            raise CommandError(cid, str(exc))
        self._apply_config(changed)
        return settings.public(self.cfg.data, changed)

    def _apply_config(self, changed):
        cfg = self.cfg.data
        if "automation" in changed:
            self.automation.update_settings(cfg["automation"])
        if "webhook" in changed:
            self.webhook.settings = cfg["webhook"]
        if "interval" in changed or "name" in changed or "automation" in changed:
            self.publish_state()
            if self.mqtt is not None and self.mqtt.connected:
                self.publish("info", self.info(), retain=True)
        reconnect = [k for k in changed if k in settings.RECONNECT_KEYS]
        if reconnect and self.mqtt is not None:
            m = self.mqtt
            self._tls_ctx = None
            m.host, m.port = self._broker_address()
            m.ssl, m.keepalive = self._tls(), cfg["mqtt_keepalive"]
            creds_keys = ("mqtt_user", "mqtt_password", "fleet_secret")
            if [k for k in changed if k in creds_keys]:
                self._save(self.creds.configure(self._credential_settings()))
                self._relink.set()
            m.user, m.password = self.creds.login()
            self._spawn(self._reconnect_later())

    async def _reconnect_later(self):
        await asyncio.sleep(0.5)  # the ack goes out first
        if self.creds is not None and (self.creds.provisioning() or self.creds.stopped()):
            self.mqtt.halt()  # another account now: the link loop takes over
        else:
            self.mqtt.kill()

    def _cmd_automation(self, cid, params):
        try:
            new = automation.validate(params, self.automation.settings)
            self.cfg.update({"automation": new})
        except (automation.AutomationError, settings.ConfigError) as exc:
            raise CommandError(cid, str(exc))
        self.automation.update_settings(new)
        self.publish_state()
        return dict(new)

    def _cmd_webhook(self, cid, params):
        try:
            merged = settings.validate_webhook(params, self.cfg.get("webhook"))
            self.cfg.update({"webhook": merged})
        except settings.ConfigError as exc:
            raise CommandError(cid, str(exc))
        self.webhook.settings = merged
        return {}

    def _cmd_ping(self, cid, params):
        return {"uptime": self.hal.uptime(), "free_mem": self.hal.free_mem()}

    def _cmd_ota(self, cid, params):
        opts = commands.ota_params(cid, params)
        if self.ota_busy:
            raise CommandError(cid, "an update is already in progress")
        self.ota_busy = True
        self._spawn(self._run_ota(cid, opts))
        return _ASYNC

    async def _run_ota(self, cid, opts):
        def progress(stage, percent):
            self.ack(payloads.ack_progress(cid, stage, percent))

        try:
            await ota.install(self.hal, self.ota_state, cid, opts, progress)
        except ota.OTAError as exc:
            self.ota_busy = False
            self.ack(payloads.ack_error(cid, str(exc)))
            return
        except Exception as exc:  # noqa: BLE001
            self.ota_busy = False
            self.ack(payloads.ack_error(cid, "update failed: %r" % (exc,)))
            return
        await asyncio.sleep(0.2)
        self.request_reboot("ota")

    async def _ota_trial_timer(self, timeout):
        await asyncio.sleep(timeout)
        if self.ota_state.get("trial"):
            self.log("new firmware did not reach the broker in %ss: rolling back" % timeout)
            ota.rollback(self.ota_state)
            ota.save(self.hal, self.ota_state)
            self.request_reboot("rollback")

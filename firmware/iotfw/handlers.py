# The built-in commands and the path every command takes: parse, run once, one final
# ack. Part of Device (device.py); OTA itself runs in maint.py.
import asyncio

from iotfw import automation, commands, payloads, settings
from iotfw.commands import CommandError

_ASYNC = object()  # a handler that sends its own final ack
# Commands running at once (each holds a task and its parsed message on the heap);
# more are answered "busy" at once and the platform may send them again.
MAX_RUNNING = 4


class Commands:
    def builtin_handlers(self):
        return {
            "relay": self._cmd_relay, "servo": self._cmd_servo, "reboot": self._cmd_reboot,
            "set_config": self._cmd_set_config, "automation": self._cmd_automation,
            "ota": self._cmd_ota, "webhook": self._cmd_webhook, "ping": self._cmd_ping,
        }

    def take_command(self, payload):
        """Runs one incoming command in its own task, up to MAX_RUNNING at once."""
        if self.commands_running >= MAX_RUNNING:
            try:
                cid = commands.parse(payload)["id"]
            except CommandError as exc:
                cid = exc.command_id
            self.publish("ack", payloads.ack_error(cid, "busy: %d commands running"
                                                   % MAX_RUNNING))
            return
        asyncio.create_task(self.handle_command(payload))

    async def handle_command(self, payload):
        """Parses, runs and acknowledges one command. Never raises."""
        self.commands_running += 1
        try:
            await self._handle_command(payload)
        finally:
            self.commands_running -= 1

    async def _handle_command(self, payload):
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
        from iotfw import maint

        self._spawn(maint.run_ota(self, cid, opts))
        return _ASYNC

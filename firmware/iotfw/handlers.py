# The built-in commands and the path every command takes: parse, run once, one final
# ack. Part of Device (device.py); the rarely used ones are in setcmds.py, OTA itself
# runs in maint.py.
import asyncio

from iotfw import commands, payloads, unload
from iotfw.commands import CommandError

ASYNC = object()  # a handler that sends its own final ack
BUILTIN = ("relay", "servo", "reboot", "ping")
# the commands that change settings or start an update: their code (setcmds.py) is
# loaded for the command and unloaded after
RARE = ("set_config", "automation", "webhook", "ota")
# Commands running at once (each holds a task and its parsed message on the heap);
# more are answered "busy" at once and the platform may send them again.
MAX_RUNNING = 4


class Commands:
    def _builtin(self, cid, name, params):
        if name in RARE:
            from iotfw import setcmds

            try:
                return setcmds.run(self, cid, name, params)
            finally:
                setcmds = None
                unload("setcmds")  # their checks and messages go with it
        return getattr(self, "_cmd_" + name)(cid, params)

    def take_command(self, payload):
        """Runs one incoming command in its own task, up to MAX_RUNNING at once.
        payload may be a view of the link's receive buffer: it is parsed now, before
        the buffer is read into again."""
        try:
            cmd = commands.parse(payload)
        except CommandError as exc:
            cmd = exc
        except Exception as exc:  # noqa: BLE001 - a command never crashes the device
            # MemoryError: no room for what it parses to (a large parameter wants one
            # free block of its size); or nesting too deep for the parser. Answered,
            # with the id read from the text, and the link stays up.
            try:
                cid = commands.find_id(payload)
            except MemoryError:
                cid = None
            if isinstance(exc, MemoryError):
                self.log("command of %d bytes: no heap to parse it" % len(payload))
                error = "out of memory: the command is larger than this device's free heap"
            else:
                error = "malformed command: %r" % (exc,)
            self.publish("ack", payloads.ack_error(cid, error))
            return
        if self.commands_running >= MAX_RUNNING:
            cid = cmd.command_id if isinstance(cmd, CommandError) else cmd["id"]
            self.publish("ack", payloads.ack_error(cid, "busy: %d commands running"
                                                   % MAX_RUNNING))
            return
        asyncio.create_task(self.handle_command(cmd))

    async def handle_command(self, cmd):
        """Runs and acknowledges one command: parsed (commands.parse), the
        CommandError its parsing raised, or its payload. Never raises."""
        self.commands_running += 1
        try:
            await self._handle_command(cmd)
        finally:
            self.commands_running -= 1

    async def _handle_command(self, cmd):
        cid = None
        try:
            if isinstance(cmd, CommandError):
                raise cmd
            if not isinstance(cmd, dict):
                cmd = commands.parse(cmd)
            cid = cmd["id"]
            first = self.recent.begin(cid)
            if first is not None:  # delivered again: answer again, do not run again
                if first is not commands.Recent.RUNNING:
                    self.publish("ack", first)
                return
            name = cmd["command"]
            if name in BUILTIN or name in RARE:
                result = self._builtin(cid, name, cmd["params"])
            elif name in self.custom:
                result = self.custom[name](self, cmd["params"])
            else:
                raise CommandError(cid, "unknown command: " + name)
            if hasattr(result, "send"):  # a coroutine (custom async handlers)
                result = await result
            if result is not ASYNC:
                self.ack(payloads.ack_ok(cid, result))
            self.commands_handled += 1
            self.webhook.notify("command", {"id": cid, "command": name})
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

    def _cmd_ping(self, cid, params):
        return {"uptime": self.hal.uptime(), "free_mem": self.hal.free_mem()}

# Command parsing and parameter validation (docs/protocol.md, "commands"). Pure:
# the device dispatches the parsed command; anything invalid becomes an error ack.
from iotfw import jsonx

MAX_ID = 128
BUILTIN = ("relay", "servo", "reboot", "set_config", "automation", "ota", "webhook",
           "ping")
RELAY_STATES = {"on": True, "off": False, "true": True, "false": False, "1": True,
                "0": False, "toggle": "toggle"}
_HEX = "0123456789abcdef"


class CommandError(ValueError):
    def __init__(self, command_id, message):
        super().__init__(message)
        self.command_id = command_id
        self.message = message

    def __str__(self):
        return self.message


def parse(payload):
    """payload (bytes) -> {"id", "command", "params"}; raises CommandError."""
    try:
        msg = jsonx.loads(payload)
    except (ValueError, UnicodeError):
        raise CommandError(None, "malformed JSON")
    if not isinstance(msg, dict):
        raise CommandError(None, "command must be a JSON object")
    cid = msg.get("id")
    if not isinstance(cid, str) or not 0 < len(cid) <= MAX_ID:
        raise CommandError(None, "command id must be a non-empty string")
    name = msg.get("command")
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise CommandError(cid, "command must be a non-empty string")
    params = msg.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise CommandError(cid, "params must be an object")
    return {"id": cid, "command": name, "params": params}


def find_id(payload):
    """The top-level "id" of a command, read from its text without parsing the
    rest (for a command too large to parse in the heap free), or None."""
    depth = 0
    in_str = escaped = False
    start = 0
    is_id = False  # the last top-level string was the key "id"
    want = False  # ...and a colon followed: the next string is the id
    for i in range(len(payload)):
        c = payload[i]
        if in_str:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # quote
                in_str = False
                if depth == 1:
                    if want:
                        if not 0 < i - start <= MAX_ID:
                            return None
                        try:
                            return bytes(payload[start:i]).decode()
                        except UnicodeError:
                            return None
                    is_id = i - start == 2 and payload[start] == 0x69 \
                        and payload[start + 1] == 0x64  # "id"
        elif c == 0x22:
            in_str = True
            start = i + 1
        elif c == 0x7B or c == 0x5B:  # { [
            depth += 1
            want = False
        elif c == 0x7D or c == 0x5D:  # } ]
            depth -= 1
        elif depth == 1 and c == 0x3A:  # colon
            want = is_id
        elif depth == 1 and c == 0x2C:  # comma
            is_id = want = False
    return None


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
            and v not in (float("inf"), float("-inf")))


def _only(cid, params, allowed):
    for key in params:
        if key not in allowed:
            raise CommandError(cid, "unknown parameter: %s" % key)


def relay_params(cid, params, relay_names):
    _only(cid, params, ("name", "state"))
    name = params.get("name")
    if not isinstance(name, str):
        raise CommandError(cid, "name must be a string")
    if name not in relay_names:
        raise CommandError(cid, "unknown relay: %s" % name)
    state = params.get("state")
    if isinstance(state, bool):
        return name, state
    if not isinstance(state, str) or state.lower() not in RELAY_STATES:
        raise CommandError(cid, "state must be on, off or toggle")
    return name, RELAY_STATES[state.lower()]


def servo_params(cid, params):
    _only(cid, params, ("angle",))
    angle = params.get("angle")
    if isinstance(angle, float) and angle == int(angle):
        angle = int(angle)
    if not _int(angle):
        raise CommandError(cid, "angle must be an integer")
    if not 0 <= angle <= 180:
        raise CommandError(cid, "angle must be 0..180")
    return angle


def reboot_params(cid, params):
    _only(cid, params, ("delay",))
    delay = params.get("delay", 0)
    if not _num(delay) or not 0 <= delay <= 3600:
        raise CommandError(cid, "delay must be a number of seconds 0..3600")
    return delay


def is_sha256_hex(value):
    if not isinstance(value, str) or len(value) != 64:
        return False
    for ch in value.lower():
        if ch not in _HEX:
            return False
    return True


def ota_params(cid, params):
    _only(cid, params, ("url", "sha256", "version", "size", "allow_downgrade"))
    url = params.get("url")
    if not isinstance(url, str) or not (url.startswith("http://") or url.startswith("https://")):
        raise CommandError(cid, "url must be an http:// or https:// URL")
    sha = params.get("sha256")
    if not is_sha256_hex(sha):
        raise CommandError(cid, "sha256 must be 64 hex characters")
    version = params.get("version")
    if not isinstance(version, str) or not 0 < len(version) <= 64:
        raise CommandError(cid, "version must be a non-empty string")
    size = params.get("size")
    if size is not None and (not _int(size) or size <= 0):
        raise CommandError(cid, "size must be a positive integer")
    downgrade = params.get("allow_downgrade", False)
    if not isinstance(downgrade, bool):
        raise CommandError(cid, "allow_downgrade must be true or false")
    return {"url": url, "sha256": sha.lower(), "version": version, "size": size,
            "allow_downgrade": downgrade}


class Recent:
    """The last few command ids and their final acks. The platform may deliver a
    command twice (it publishes again when it could not confirm the first publish);
    a repeat is answered with the first answer and not run again. Bounded: the oldest
    id is forgotten first. RAM only, so a reboot forgets (a reboot also ends any
    command that was running)."""

    RUNNING = "running"

    def __init__(self, size=16):
        self.size = size
        self._acks = {}  # id -> final ack, or RUNNING until it is known
        self._order = []  # ids, oldest first
        self.repeats = 0

    def __len__(self):
        return len(self._order)

    def begin(self, cid):
        """None for a new id (now remembered as running); for a repeat, its final ack
        (a dict) or RUNNING while the first delivery has not answered yet."""
        if cid in self._acks:
            self.repeats += 1
            return self._acks[cid]
        if len(self._order) >= self.size:
            del self._acks[self._order.pop(0)]
        self._order.append(cid)
        self._acks[cid] = Recent.RUNNING
        return None

    def finish(self, ack):
        """Remember a final ack (ok or error) for its command id, if that id is known."""
        cid = ack.get("id")
        if cid in self._acks and ack.get("status") != "progress":
            self._acks[cid] = ack

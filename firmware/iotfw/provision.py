# Which MQTT account the device logs in with, and provisioning with the fleet secret
# (secure mode, docs/security.md). Pure: no I/O, no clock, no asyncio. The device tells
# it what happened (connected, refused, an answer arrived) and does what it says; the
# config updates it returns are what the device must store.
#
# Modes:
#   open     no credentials, no fleet secret: anonymous (a platform in open mode)
#   own      username + secret of its own (issued by an admin, or provisioned)
#   request  fleet secret, no own credentials: connect as `provision`, ask
#   pending  asked, not approved yet: stay connected, ask again now and then
#   stopped  the platform said no (revoked, rejected, refused again and again): no
#            more attempts until a reboot or new settings; the device keeps working
#            offline (sensors, automations)
from iotfw import jsonx

PROVISION_USER = "provision"
OPEN = "open"
OWN = "own"
REQUEST = "request"
PENDING = "pending"
STOPPED = "stopped"

SECRET_BYTES = 24  # 48 hex characters (the platform takes 16..256)
MIN_SECRET = 16
MAX_SECRET = 128  # what the mqtt_password setting holds
FALLBACK_AFTER = 3  # own credentials refused this many times in a row: provision again
GIVE_UP_AFTER = 6  # logins refused in a row (any account) before stopping
ASK_FIRST_S = 10  # no answer yet: ask again after this
ASK_BASE_S = 5  # pending: ask again after 5, 10, 20, ... seconds
ASK_CAP_S = 300
REFUSED_CODES = (4, 5)  # CONNACK: bad user name or password, not authorized


def fingerprint(secret):
    """What the platform shows beside this device's pending request: the first 6 bytes
    of the secret's SHA-256 in hex groups of 4. An admin approves only a request whose
    fingerprint the device shows (its log, its setup page): anyone holding the fleet
    secret can ask in this device's name."""
    import hashlib

    digest = hashlib.sha256(secret.encode()).digest()
    text = "".join(["%02X" % b for b in digest[:6]])
    return text[0:4] + "-" + text[4:8] + "-" + text[8:12]


def request_topic(node_id):
    return "provision/" + node_id + "/request"


def response_topic(node_id):
    return "provision/" + node_id + "/response"


def request_payload(secret):
    return jsonx.dumps({"secret": secret}).encode()


def new_secret(random_bytes):
    """random_bytes(n) -> n random bytes (os.urandom); returns hex text."""
    return "".join(["%02x" % b for b in random_bytes(SECRET_BYTES)])


def parse_answer(payload):
    """provision/{id}/response payload -> (status, error); (None, reason) if malformed."""
    try:
        body = jsonx.loads(payload)
    except (ValueError, UnicodeError):
        return None, "malformed JSON"
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        return None, "no status"
    error = body.get("error")
    return body["status"], error if isinstance(error, str) else ""


class Credentials:
    """The credential state machine of one device."""

    def __init__(self, node_id, make_secret):
        self.node_id = node_id
        self.make_secret = make_secret  # () -> a fresh random secret (text)
        self.mode = OPEN
        self.reason = ""  # why it stopped
        self.user = None
        self.password = None
        self.fleet = ""
        self.secret = ""  # the secret it asks (asked) to be approved with
        self.probing = False  # next login: as itself with self.secret (approved meanwhile?)
        self.refusals = 0  # logins refused in a row
        self.own_refusals = 0
        self.asks = 0  # requests sent while waiting
        self.answers = 0
        self.bad_answers = 0
        self.last_status = None
        self._refused_as = []  # accounts refused in this row, for the stop reason

    # -- settings -----------------------------------------------------------

    def configure(self, cfg):
        """(Re)starts from the config; returns config updates to store, or None."""
        self.user = cfg.get("mqtt_user") or None
        self.password = cfg.get("mqtt_password") or None
        self.fleet = cfg.get("fleet_secret") or ""
        self.secret = cfg.get("provision_secret") or ""
        self.reason = ""
        self.probing = False
        self.refusals = 0
        self.own_refusals = 0
        self.asks = 0
        self._refused_as = []
        if self.user:
            self.mode = OWN
            return None
        if self.fleet:
            return self._start_request(self.secret)
        self.mode = OPEN
        return None

    def _start_request(self, secret):
        self.mode = REQUEST
        self.probing = False
        self.asks = 0
        if MIN_SECRET <= len(secret or "") <= MAX_SECRET:
            self.secret = secret
            return {"provision_secret": secret}
        self.secret = self.make_secret()
        # stored before it is sent: a reboot while pending asks with the same secret
        return {"provision_secret": self.secret}

    # -- what to do next ----------------------------------------------------

    def provisioning(self):
        """True while the next login is the `provision` account (fleet secret)."""
        return self.mode in (REQUEST, PENDING) and not self.probing

    def stopped(self):
        return self.mode == STOPPED

    def login(self):
        """(username, password) for the next connection attempt."""
        if self.mode == OWN:
            return self.user, self.password
        if self.mode in (REQUEST, PENDING):
            if self.probing:
                return self.node_id, self.secret
            return PROVISION_USER, self.fleet
        return None, None

    def ask_delay(self):
        """Seconds until the request is sent again (the answer is not retained)."""
        if self.mode != PENDING:
            return ASK_FIRST_S
        delay = ASK_BASE_S
        for _ in range(self.asks):
            delay *= 2
            if delay >= ASK_CAP_S:
                return ASK_CAP_S
        return delay

    def asked(self):
        self.asks += 1

    # -- events -------------------------------------------------------------

    def connected(self):
        """CONNACK accepted. Returns config updates to store, or None."""
        self.refusals = 0
        self._refused_as = []
        if self.mode == OWN:
            self.own_refusals = 0
            return None
        if self.mode in (REQUEST, PENDING) and self.probing:
            # approved while it was not listening: the secret it asked with works
            return self._approved()
        return None

    def refused(self, rc):
        """CONNACK refused with rc (4 or 5). Returns config updates to store, or None.

        Other failures (network, timeouts, broker down) are not refusals: the link
        just tries again later.
        """
        if rc not in REFUSED_CODES or self.mode == STOPPED:
            return None
        self.refusals += 1
        account = "own" if self.mode == OWN else (
            "probe" if self.probing else ("provision" if self.mode != OPEN else "anonymous"))
        if account not in self._refused_as:
            self._refused_as.append(account)
        if self.refusals >= GIVE_UP_AFTER:
            self._stop(self._refusal_reason())
            return None
        if self.mode == OWN:
            self.own_refusals += 1
            if self.own_refusals < FALLBACK_AFTER:
                return None
            if not self.fleet:
                self._stop(self._refusal_reason())
                return None
            # Perhaps the platform forgot this device (credentials deleted, new
            # database): ask again, with the same secret.
            return self._start_request(self.password or "")
        if self.mode in (REQUEST, PENDING):
            # provision refused: perhaps approved meanwhile (the broker refuses the
            # provision account for approved ids); then the other way round
            self.probing = not self.probing and bool(self.secret)
        return None

    def answer(self, payload):
        """A message on provision/{id}/response. Returns config updates or None."""
        status, error = parse_answer(payload)
        if status is None:
            self.bad_answers += 1
            return None
        self.answers += 1
        self.last_status = status
        if self.mode not in (REQUEST, PENDING):
            return None  # late duplicate
        if status == "pending":
            if self.mode != PENDING:
                self.asks = 0
            self.mode = PENDING
            self.refusals = 0
            return None
        if status == "approved":
            return self._approved()
        if status == "revoked":
            self._stop("revoked by the platform: an admin must delete this device's "
                       "credentials (DELETE /api/credentials/%s) before it may ask again"
                       % self.node_id)
            return None
        if status == "rejected":
            if "again later" in error:
                return None  # the platform had trouble: the next ask may work
            self._stop("request rejected by the platform: " + (error or "no reason given"))
            return None
        self.bad_answers += 1
        return None

    def _approved(self):
        self.mode = OWN
        self.user = self.node_id
        self.password = self.secret
        self.probing = False
        self.refusals = 0
        self.own_refusals = 0
        self._refused_as = []
        return {"mqtt_user": self.node_id, "mqtt_password": self.secret,
                "provision_secret": ""}

    def _stop(self, reason):
        self.mode = STOPPED
        self.probing = False
        self.reason = reason

    def _refusal_reason(self):
        tried = self._refused_as
        if tried == ["anonymous"]:
            return ("the broker refused an anonymous login: set a fleet secret "
                    "(fleet_secret) or credentials (mqtt_user, mqtt_password)")
        if "provision" in tried and "own" in tried:
            return ("the broker refused this device's credentials and the fleet secret: "
                    "revoked, or rotated (store the new ones), or the fleet secret is wrong")
        if "provision" in tried:
            return ("the broker refused the fleet secret: wrong secret, provisioning "
                    "off, or this device id is already approved or revoked")
        return ("the broker refused this device's credentials (revoked or rotated): "
                "set new ones, or a fleet secret to ask for them")

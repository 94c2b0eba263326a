# Device configuration: JSON on flash, defaults, validation. A missing or corrupt
# file, or a bad value in it, falls back to defaults instead of bricking the device.
# The checks themselves are in schema.py, loaded only while something is validated.
from iotfw import automation, jsonx, unload

CONFIG_FILE = "config.json"
SECRET_KEYS = ("wifi_password", "mqtt_password", "fleet_secret", "provision_secret")
SECRET_MASK = "********"


def defaults():
    return {
        "name": "",
        "wifi_ssid": "",
        "wifi_password": "",
        "wifi_max_failures": 10,
        "mqtt_host": "",
        "mqtt_port": 1883,
        "mqtt_user": "",
        "mqtt_password": "",
        "mqtt_tls": False,
        "mqtt_ca": "",
        "fleet_secret": "",
        "provision_secret": "",
        "mqtt_keepalive": 60,
        "interval": 2,
        "tz_offset": 0,
        "ntp_host": "pool.ntp.org",
        "pin_dht": 4,
        "pin_gas": 34,
        "pin_servo": 13,
        "pin_led": -1,
        "relays": {"light": 26, "fan": 27},
        "relay_active_low": False,
        "automation": dict(automation.DEFAULTS),
        "webhook": {"url": "", "method": "POST", "events": []},
        "ota_confirm_timeout": 120,
        "watchdog_ms": 30000,
    }


def default(key):
    return defaults()[key]


# keys that only take effect after a reboot
REBOOT_KEYS = ("wifi_ssid", "wifi_password", "pin_dht", "pin_gas", "pin_servo", "pin_led",
               "relays", "relay_active_low", "watchdog_ms")
# keys that take effect on the next MQTT connection
RECONNECT_KEYS = ("mqtt_host", "mqtt_port", "mqtt_user", "mqtt_password", "mqtt_tls",
                  "mqtt_ca", "fleet_secret", "mqtt_keepalive")


class ConfigError(ValueError):
    pass


def _schema():
    from iotfw import schema

    return schema


def validate(updates, current=None):
    """Validates updates against the schema; returns (merged, changed_keys).

    Raises ConfigError on the first unknown key or bad value; nothing is applied.
    """
    try:
        return _schema().validate(updates, current)
    finally:
        unload("schema")


def validate_webhook(v, current=None):
    try:
        return _schema().validate_webhook(v, current)
    finally:
        unload("schema")


def public(cfg, keys=None):
    """A copy for reporting, with secrets masked."""
    out = {}
    for key in (keys if keys is not None else cfg):
        value = cfg.get(key)
        if key in SECRET_KEYS and value:
            value = SECRET_MASK
        out[key] = value
    return out


class Config:
    """Holds the configuration and persists it through storage.

    storage: an object with read_file(name) -> bytes or None and
    write_file(name, data) (the HAL provides both).
    """

    def __init__(self, storage):
        self.storage = storage
        self.data = defaults()
        self.load_errors = []

    def load(self):
        self.data = defaults()
        self.load_errors = []
        try:
            raw = self.storage.read_file(CONFIG_FILE)
        except OSError as exc:
            self.load_errors.append("read failed: %s" % exc)
            return self.data
        if raw is None:
            return self.data
        try:
            stored = jsonx.loads(raw)
        except (ValueError, UnicodeError) as exc:
            self.load_errors.append("corrupt config file: %s" % exc)
            return self.data
        if not isinstance(stored, dict):
            self.load_errors.append("config file is not an object")
            return self.data
        # one bad value does not throw away the rest
        schema = _schema()
        try:
            for key in stored:
                try:
                    self.data, _ = schema.validate({key: stored[key]}, self.data)
                except ConfigError as exc:
                    self.load_errors.append(str(exc))
        finally:
            schema = None
            unload("schema")
        return self.data

    def save(self):
        self.storage.write_file(CONFIG_FILE, _pieces(self.data))

    def update(self, updates):
        """Validates, applies and persists updates; returns the changed keys."""
        self.data, changed = validate(updates, self.data)
        if changed:
            self.save()
        return changed

    def get(self, key):
        return self.data.get(key)

    def provisioned(self):
        return bool(self.data.get("wifi_ssid")) and bool(self.data.get("mqtt_host"))


def _pieces(data):
    """The config's JSON as a list of short bytes: the whole text in one piece (~2 KB
    with a CA certificate, as text and then as bytes) may find no room in one piece
    of the heap; a long string is cut into pieces of its escaped text."""
    out = []
    sep = "{"
    for key in data:
        value = data[key]
        out.append((sep + jsonx.dumps(key) + ":").encode())
        if isinstance(value, str) and len(value) > 128:
            out.append(b'"')
            for i in range(0, len(value), 128):
                out.append(jsonx.dumps(value[i:i + 128])[1:-1].encode())
            out.append(b'"')
        else:
            out.append(jsonx.dumps(value).encode())
        sep = ","
    if sep == "{":
        out.append(b"{")
    out.append(b"}")
    return out

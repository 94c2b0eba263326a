# The config's schema: every key's check, loaded only while something is validated
# (the config at boot, a set_config, the setup portal) and unloaded after (see
# settings.py): its checks and messages are among the firmware's larger objects, and
# the device needs them seldom.
from iotfw import automation, settings
from iotfw.settings import ConfigError

MAX_CA_PEM = 4096

WEBHOOK_EVENTS = ("data", "gas_alarm", "gas_clear", "automation", "boot", "online",
                  "command")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
            and v not in (float("inf"), float("-inf")))


def _str_check(maxlen):
    def check(key, v):
        if not isinstance(v, str):
            raise ConfigError("%s must be a string" % key)
        if len(v) > maxlen:
            raise ConfigError("%s is longer than %d characters" % (key, maxlen))
        return v
    return check


def _int_check(lo, hi):
    def check(key, v):
        if not _is_int(v) or not lo <= v <= hi:
            raise ConfigError("%s must be an integer %d..%d" % (key, lo, hi))
        return v
    return check


def _num_check(lo, hi):
    def check(key, v):
        if not _is_num(v) or not lo <= v <= hi:
            raise ConfigError("%s must be a number %s..%s" % (key, lo, hi))
        return v
    return check


def _bool_check(key, v):
    if not isinstance(v, bool):
        raise ConfigError("%s must be true or false" % key)
    return v


def _pin_check(key, v):
    if not _is_int(v) or not -1 <= v <= 48:
        raise ConfigError("%s must be a GPIO number (or -1 for none)" % key)
    return v


def _relays_check(key, v):
    if not isinstance(v, dict) or len(v) > 8:
        raise ConfigError("relays must be an object of at most 8 name: pin entries")
    for name in v:
        if not valid_name(name):
            raise ConfigError("bad relay name: %r" % (name,))
        _pin_check("relays." + name, v[name])
    return dict(v)


def _ca_check(key, v):
    if not isinstance(v, str) or len(v) > MAX_CA_PEM:
        raise ConfigError("%s must be a PEM certificate of at most %d characters"
                          % (key, MAX_CA_PEM))
    if v:
        from iotfw import tls

        try:
            tls.check_pem(v)
        except tls.TLSError as exc:
            raise ConfigError("%s: %s" % (key, exc))
    return v


def _automation_check(key, v):
    try:
        return automation.validate(v)
    except automation.AutomationError as exc:
        raise ConfigError(str(exc))


def validate_webhook(v, current=None):
    if not isinstance(v, dict):
        raise ConfigError("webhook must be an object")
    merged = dict(current or settings.default("webhook"))
    for key in v:
        if key not in ("url", "method", "events"):
            raise ConfigError("unknown webhook setting: %s" % key)
    if "url" in v:
        url = v["url"]
        if not isinstance(url, str) or len(url) > 256 or (
                url and not (url.startswith("http://") or url.startswith("https://"))):
            raise ConfigError("webhook url must be an http:// or https:// URL")
        merged["url"] = url
    if "method" in v:
        method = v["method"]
        if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
            raise ConfigError("webhook method must be GET or POST")
        merged["method"] = method.upper()
    if "events" in v:
        events = v["events"]
        if not isinstance(events, list):
            raise ConfigError("webhook events must be a list")
        for ev in events:
            if ev not in WEBHOOK_EVENTS:
                raise ConfigError("unknown webhook event: %r" % (ev,))
        merged["events"] = list(events)
    return merged


def _webhook_check(key, v):
    return validate_webhook(v)


def valid_name(name):
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        return False
    for ch in name:
        if not (ch.isalpha() or ch.isdigit() or ch in "_-.") or ord(ch) > 127:
            return False
    return True


CHECKS = {
    "name": _str_check(128),
    "wifi_ssid": _str_check(32),
    "wifi_password": _str_check(64),
    "wifi_max_failures": _int_check(1, 1000),
    "mqtt_host": _str_check(128),
    "mqtt_port": _int_check(1, 65535),
    "mqtt_user": _str_check(128),
    "mqtt_password": _str_check(128),
    "mqtt_tls": _bool_check,
    "mqtt_ca": _ca_check,
    "fleet_secret": _str_check(256),
    "provision_secret": _str_check(128),
    "mqtt_keepalive": _int_check(10, 3600),
    "interval": _num_check(0.5, 86400),
    "tz_offset": _int_check(-720, 840),
    "ntp_host": _str_check(128),
    "pin_dht": _pin_check,
    "pin_gas": _pin_check,
    "pin_servo": _pin_check,
    "pin_led": _pin_check,
    "relays": _relays_check,
    "relay_active_low": _bool_check,
    "automation": _automation_check,
    "webhook": _webhook_check,
    "ota_confirm_timeout": _int_check(10, 3600),
    "watchdog_ms": _int_check(0, 3600000),
}


def validate(updates, current=None):
    """Validates updates against the schema; returns (merged, changed_keys).

    Raises ConfigError on the first unknown key or bad value; nothing is applied.
    """
    if not isinstance(updates, dict):
        raise ConfigError("config must be an object")
    merged = dict(current if current is not None else settings.defaults())
    changed = []
    for key in updates:
        check = CHECKS.get(key)
        if check is None:
            raise ConfigError("unknown config key: %s" % key)
        value = check(key, updates[key])
        if key == "watchdog_ms" and 0 < value < 5000:
            raise ConfigError("watchdog_ms must be 0 (off) or at least 5000")
        if merged.get(key) != value:
            changed.append(key)
        merged[key] = value
    return merged, changed

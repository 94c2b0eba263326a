# Topics and payloads of the device protocol (docs/protocol.md, version 1).
import sys

from iotfw import PROTOCOL, jsonx

MAX_PAYLOAD = 16384


def topic(node_id, leaf):
    return "devices/" + node_id + "/" + leaf


def valid_node_id(node_id):
    if not isinstance(node_id, str) or not 1 <= len(node_id) <= 64:
        return False
    for ch in node_id:
        if not (("0" <= ch <= "9") or ("a" <= ch <= "z") or ("A" <= ch <= "Z")
                or ch in "_-"):
            return False
    return True


def encode(obj):
    data = jsonx.dumps(obj).encode()
    if len(data) > MAX_PAYLOAD:
        raise ValueError("payload over %d bytes" % MAX_PAYLOAD)
    return data


def data(readings, seq, ts=None):
    msg = {}
    for key in readings:
        value = readings[key]
        if value is not None:
            msg[key] = value
    msg["seq"] = seq
    if ts is not None:
        msg["ts"] = ts
    return msg


# The unit each of our sensors reports in (protocol info "units"); "" says "no unit":
# the gas level is the MQ sensor's raw ADC reading.
SENSOR_UNITS = {"temperature": "\u00b0C", "humidity": "%", "gas": ""}


def units(sensors):
    out = {}
    for name in sensors:
        if name in SENSOR_UNITS:
            out[name] = SENSOR_UNITS[name]
    return out


def info(device_type, firmware, capabilities, interval, mac, ip=None, rssi=None,
         name=None, extra=None, units=None):
    msg = {"protocol": PROTOCOL, "type": device_type, "firmware": firmware,
           "capabilities": capabilities, "interval": interval, "mac": mac}
    if units:
        msg["units"] = units
    if ip:
        msg["ip"] = ip
    if rssi is not None:
        msg["rssi"] = rssi
    if name:
        msg["name"] = name
    micropython = micropython_version()
    if micropython:
        msg["micropython"] = micropython
    if extra:
        for key in extra:
            msg[key] = extra[key]
    return msg


def micropython_version():
    """"1.24.1" on MicroPython, None elsewhere: an OTA bundle's .mpy files are
    chosen by it (iotfw/bundle.py)."""
    impl = sys.implementation
    if impl.name != "micropython":
        return None
    return "%d.%d.%d" % impl.version[:3]


def capabilities(sensors, relays, servo=True, custom=()):
    caps = list(sensors)
    for name in relays:
        caps.append("relay:" + name)
    if servo:
        caps.append("servo")
    caps.extend(("reboot", "ota", "automation", "webhook"))
    for name in custom:
        caps.append("cmd:" + name)
    return caps[:64]


def ack_ok(command_id, result=None):
    return {"id": command_id, "status": "ok", "result": {} if result is None else result}


def ack_error(command_id, error):
    return {"id": command_id, "status": "error", "error": str(error)}


def ack_progress(command_id, stage, percent=None):
    result = {"stage": stage}
    if percent is not None:
        result["percent"] = percent
    return {"id": command_id, "status": "progress", "result": result}


def event(name, level="info", ts=None, **fields):
    msg = {"event": name, "level": level}
    for key in fields:
        msg[key] = fields[key]
    if ts is not None:
        msg["ts"] = ts
    return msg

"""The short keys Home Assistant's MQTT discovery accepts in place of the long ones.

Only the keys this package writes or reads: a config using another short key still
works for Home Assistant, and here its value is simply not understood (the entity is
then taken as it would be without that key)."""

from __future__ import annotations

from typing import Any

# Entity config keys.
ENTITY: dict[str, str] = {
    "avty": "availability",
    "avty_mode": "availability_mode",
    "avty_t": "availability_topic",
    "avty_tpl": "availability_template",
    "cmd_t": "command_topic",
    "cmd_tpl": "command_template",
    "dev": "device",
    "dev_cla": "device_class",
    "ent_cat": "entity_category",
    "exp_aft": "expire_after",
    "ic": "icon",
    "json_attr_t": "json_attributes_topic",
    "max": "max",
    "min": "min",
    "mode": "mode",
    "name": "name",
    "o": "origin",
    "obj_id": "object_id",
    "opt": "optimistic",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off",
    "pl_on": "payload_on",
    "pl_prs": "payload_press",
    "qos": "qos",
    "ret": "retain",
    "stat_cla": "state_class",
    "stat_off": "state_off",
    "stat_on": "state_on",
    "stat_t": "state_topic",
    "step": "step",
    "t": "topic",
    "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement",
    "val_tpl": "value_template",
}
# Keys inside ``device``.
DEVICE: dict[str, str] = {
    "cns": "connections",
    "cu": "configuration_url",
    "hw": "hw_version",
    "ids": "identifiers",
    "mdl": "model",
    "mf": "manufacturer",
    "name": "name",
    "sa": "suggested_area",
    "sn": "serial_number",
    "sw": "sw_version",
}
# Keys inside ``origin``.
ORIGIN: dict[str, str] = {"name": "name", "sw": "sw_version", "url": "support_url"}
# Keys inside each entry of ``availability``.
AVAILABILITY: dict[str, str] = {
    "t": "topic",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "val_tpl": "value_template",
}
BASE_TOPIC = "~"


def _rename(obj: dict[str, Any], table: dict[str, str]) -> dict[str, Any]:
    return {table.get(key, key): value for key, value in obj.items()}


def expand(config: dict[str, Any]) -> dict[str, Any]:
    """The config with every short key made long and the base topic ``~`` put into the
    topics that start or end with it, as Home Assistant reads it."""
    out = _rename(config, ENTITY)
    base = out.pop(BASE_TOPIC, None)
    if isinstance(out.get("device"), dict):
        out["device"] = _rename(out["device"], DEVICE)
    if isinstance(out.get("origin"), dict):
        out["origin"] = _rename(out["origin"], ORIGIN)
    if isinstance(out.get("availability"), list):
        out["availability"] = [
            _rename(a, AVAILABILITY) if isinstance(a, dict) else a for a in out["availability"]
        ]
    if isinstance(base, str):
        out = {key: _with_base(key, value, base) for key, value in out.items()}
        if isinstance(out.get("availability"), list):
            out["availability"] = [
                {k: _with_base(k, v, base) for k, v in a.items()} if isinstance(a, dict) else a
                for a in out["availability"]
            ]
    return out


def _with_base(key: str, value: Any, base: str) -> Any:
    if not isinstance(value, str) or not (key.endswith("_topic") or key == "topic"):
        return value
    if value.startswith(BASE_TOPIC):
        return base + value[1:]
    if value.endswith(BASE_TOPIC):
        return value[:-1] + base
    return value

"""Units of metrics: what a device declares in its ``info`` (``units``), and the
defaults for the sensors every firmware of ours has, so a device that declares none
(older firmware, devices built to the original design) still shows °C and %."""

from __future__ import annotations

from collections.abc import Mapping

MAX_UNIT_LENGTH = 16

# Known metric names and the unit they are reported in when the device does not say.
# ``gas`` has none on purpose: the firmware reports the MQ sensor's raw ADC level.
DEFAULT_UNITS: Mapping[str, str] = {
    "temperature": "°C",
    "humidity": "%",
    "rssi": "dBm",
    "pressure": "hPa",
    "co2": "ppm",
    "battery": "%",
    "voltage": "V",
    "illuminance": "lx",
}


def units_for(declared: Mapping[str, str] | None) -> dict[str, str]:
    """The defaults, overridden by what the device declared; a declared empty string
    means "no unit" and removes the default."""
    units = dict(DEFAULT_UNITS)
    for name, unit in (declared or {}).items():
        if unit:
            units[name] = unit
        else:
            units.pop(name, None)
    return units

"""Adapters for foreign firmware (Tasmota, Zigbee2MQTT, Shelly, and mappings of one's
own): a declarative mapping (``spec``) from foreign topics and payloads to the
platform's device messages, run by ``engine``; files read by ``loader``."""

from iotp.adapters.engine import AdapterEngine, KeyReport, MappingError, Translation
from iotp.adapters.loader import BUILTIN, MappingFileError, builtin, load_dir, load_file, parse
from iotp.adapters.spec import Mapping

__all__ = [
    "BUILTIN",
    "AdapterEngine",
    "KeyReport",
    "Mapping",
    "MappingError",
    "MappingFileError",
    "Translation",
    "builtin",
    "load_dir",
    "load_file",
    "parse",
]

"""Firmware tests: put firmware/ and the shared pure-test helpers on sys.path."""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
FIRMWARE_DIR = _HERE.parents[1] / "firmware"
PURE_DIR = _HERE / "pure"

for _path in (str(FIRMWARE_DIR), str(PURE_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

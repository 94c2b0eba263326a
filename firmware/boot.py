# Runs first on every boot: selects the active firmware slot (see iotfw/ota.py).
import os
import sys

try:
    from iotfw import ota
    from iotfw.flash import FileStorage

    _slot = ota.boot_select(FileStorage())
    if _slot:
        # the slot's copy of the iotfw package shadows the factory one (the slots
        # sit next to config.json: in / on the ESP32, in the device's directory on
        # the unix port)
        _cwd = os.getcwd()
        sys.path.insert(0, ("" if _cwd == "/" else _cwd) + "/" + _slot)
        for _name in list(sys.modules):
            if _name == "iotfw" or _name.startswith("iotfw."):
                del sys.modules[_name]
except Exception as exc:  # noqa: BLE001 - never let boot selection brick the device
    print("boot: slot selection failed:", exc)

# Runs first on every boot: selects the active firmware slot (see iotfw/ota.py).
import sys

try:
    from iotfw import ota
    from iotfw.hal import FileStorage

    _slot = ota.boot_select(FileStorage())
    if _slot:
        # the slot's copy of the iotfw package shadows the factory one
        sys.path.insert(0, "/" + _slot)
        for _name in list(sys.modules):
            if _name == "iotfw" or _name.startswith("iotfw."):
                del sys.modules[_name]
except Exception as exc:  # noqa: BLE001 - never let boot selection brick the device
    print("boot: slot selection failed:", exc)

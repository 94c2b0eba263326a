# Runs first on every boot: selects the active firmware slot (see iotfw/ota.py) and,
# on a build with ROMFS, mounts that firmware's image so its modules run in place.
import os
import sys

try:
    import romfs_map  # the port's ROMFS partition; absent on a build without ROMFS
except ImportError:
    romfs_map = None

try:
    if romfs_map is not None:
        # a port with ROMFS mounts its partition at start-up, ahead of the file
        # system on sys.path: boot selection runs the factory files, and nothing
        # runs from the partition before it holds the selected image
        romfs_map.release()
    from iotfw import ota
    from iotfw.flash import FileStorage

    _slot = ota.boot_select(FileStorage())
    ota = FileStorage = None
    _mounted = False
    if romfs_map is not None:
        # every firmware keeps the image of its iotfw package next to its files (the
        # factory one in the flash's root, an update's in its slot)
        try:
            _mounted = romfs_map.mount((_slot + "/" if _slot else "") + "iotfw.rom")
        except Exception as exc:  # noqa: BLE001 - a bad image: the same firmware's files
            print("boot: the firmware's image did not mount:", exc)
    if _mounted:
        sys.path.insert(0, romfs_map.MOUNT)
    elif _slot:
        # the slot's copy of the iotfw package shadows the factory one (the slots
        # sit next to config.json: in / on the ESP32, in the device's directory on
        # the unix port)
        _cwd = os.getcwd()
        sys.path.insert(0, ("" if _cwd == "/" else _cwd) + "/" + _slot)
    # what boot selection and mounting loaded (from the factory files) comes again
    # from the firmware selected
    for _name in list(sys.modules):
        if _name == "iotfw" or _name.startswith("iotfw."):
            del sys.modules[_name]
except Exception as exc:  # noqa: BLE001 - never let boot selection brick the device
    print("boot: slot selection failed:", exc)

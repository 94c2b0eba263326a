# Runs first on every boot: selects the active firmware slot (see iotfw/ota.py) and,
# on a build with ROMFS, mounts that firmware's image so its modules run in place.
# An update staged while the device ran is installed here, by the selected
# firmware, before anything else takes the heap; the device then starts again, so
# that the slot it switched to runs on a heap the installer has not cut up.
import os
import sys

try:
    import romfs_map  # the port's ROMFS partition; absent on a build without ROMFS
except ImportError:
    romfs_map = None


def _forget_firmware():
    # what was imported comes again from the firmware selected next
    for name in list(sys.modules):
        if name == "iotfw" or name.startswith("iotfw."):
            del sys.modules[name]


def _select():
    """Selects the slot to run and puts its firmware first on sys.path."""
    if romfs_map is not None:
        # a port with ROMFS mounts its partition at start-up, ahead of the file
        # system on sys.path: boot selection runs the factory files, and nothing
        # runs from the partition before it holds the selected image
        romfs_map.release()
    from iotfw import ota
    from iotfw.flash import FileStorage

    slot = ota.boot_select(FileStorage())
    mounted = False
    if romfs_map is not None:
        # every firmware keeps the image of its iotfw package next to its files (the
        # factory one in the flash's root, an update's in its slot)
        try:
            mounted = romfs_map.mount((slot + "/" if slot else "") + "iotfw.rom")
        except Exception as exc:  # noqa: BLE001 - a bad image: the same firmware's files
            print("boot: the firmware's image did not mount:", exc)
    entry = None
    if mounted:
        entry = romfs_map.MOUNT
    elif slot:
        # the slot's copy of the iotfw package shadows the factory one (the slots
        # sit next to config.json: in / on the ESP32, in the device's directory on
        # the unix port)
        cwd = os.getcwd()
        entry = ("" if cwd == "/" else cwd) + "/" + slot
    if entry is not None:
        sys.path.insert(0, entry)
    # what selecting and mounting imported (from the factory files) comes again from
    # the firmware selected
    _forget_firmware()


def _staged():
    from iotfw import ota
    from iotfw.flash import FileStorage

    return bool(ota.load(FileStorage()).get("staged"))


def _install():
    """Installs the staged update with the selected firmware (a refusal goes into
    the OTA state's results)."""
    from iotfw import install
    from iotfw.flash import FileStorage

    install.install_staged(FileStorage())


def _give_up(failed):
    # reported, and not tried again: a device restarts after each try
    try:
        from iotfw import ota
        from iotfw.flash import FileStorage

        storage = FileStorage()
        ota.refuse_staged(storage, ota.load(storage), failed)
    except Exception as exc:  # noqa: BLE001
        print("boot: cannot give the staged update up:", exc)


restart = False  # the port's main.py restarts where machine.reset() is missing (unix)
try:
    _select()
    restart = _staged()
    if restart:
        try:
            _install()
        except Exception as exc:  # noqa: BLE001 - an installer that does not even start
            print("boot: installing the staged update failed:", exc)
            _give_up("update failed: %r" % (exc,))
    _forget_firmware()
    if restart:
        # installed or refused: the firmware starts on a heap the installer has not
        # cut up (a MicroPython heap does not compact)
        print("boot: restarting after the update")
        import machine

        if hasattr(machine, "reset"):
            machine.reset()
except Exception as exc:  # noqa: BLE001 - never let boot selection brick the device
    print("boot: slot selection failed:", exc)
# the firmware's globals start empty (on the ESP32 boot.py's are main.py's)
_select = _staged = _install = _give_up = _forget_firmware = None

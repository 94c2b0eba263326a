# The ESP32 HAL on real MicroPython with stand-ins for machine/network/dht
# (tests/firmware/micropython/stubs): flash files, pins, OTA slot selection.
# Under CPython there is no `machine` module, so this only runs inside MicroPython.
import sys

ON_MICROPYTHON = sys.implementation.name == "micropython"


def test_esp32_hal_files_pins_and_boot_slot():
    if not ON_MICROPYTHON:
        return
    import os

    from iotfw import bundle, ota, settings
    from iotfw.flash import FileStorage
    from iotfw.hal import Hal

    os.chdir("/tmp")
    hal = Hal()
    assert hal.mac() == b"\xa4\xcf\x12\xb3\xc4\xd5"
    hal.write_file("config.json", b'{"interval": 5}')
    cfg = settings.Config(hal)
    assert cfg.load()["interval"] == 5
    assert hal.read_file("missing.json") is None
    # nested writes create folders; remove_tree cleans them
    w = hal.open_write("slot_b/iotfw/x.py")
    w.write(b"abc")
    w.close()
    assert hal.read_file("slot_b/iotfw/x.py") == b"abc"
    hal.remove_tree("slot_b")
    assert hal.read_file("slot_b/iotfw/x.py") is None
    # pins
    hal.setup(cfg.data)
    assert hal.sensors() == ["temperature", "humidity", "gas"]
    assert hal.read_climate() == (22.5, 41.0)
    assert hal.read_gas() == 1234
    hal.set_relay("light", True)
    assert hal._relays["light"].value() == 1
    hal.set_servo(180)
    assert hal._servo.ns == 2500000
    # boot.py's slot selection: a trial slot is used until it has failed too often
    state = ota.load(hal)
    state["active"] = "slot_a"
    state["versions"]["slot_a"] = "2.0.0"
    state["trial"] = {"id": "c1", "version": "2.0.0", "previous": "", "boots": 0}
    ota.save(hal, state)
    storage = FileStorage()
    for _ in range(ota.MAX_TRIAL_BOOTS):
        assert ota.boot_select(storage) == "slot_a"
    assert ota.boot_select(storage) == ""  # rolled back to the factory firmware
    results = ota.load(hal)["results"]
    assert results == [{"id": "c1", "status": "error", "error": "rolled_back", "version": "2.0.0"}]
    assert bundle.valid_path("iotfw/hal.py")

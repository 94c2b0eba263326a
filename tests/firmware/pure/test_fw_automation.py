from fwtest_helpers import raises
from iotfw import automation
from iotfw.automation import Automation, AutomationError


def hm(h, m=0):
    return h * 60 + m


def test_schedule_same_day_and_across_midnight():
    s = dict(automation.DEFAULTS)
    assert automation.schedule_wants_on(s, hm(18)) is True
    assert automation.schedule_wants_on(s, hm(22, 59)) is True
    assert automation.schedule_wants_on(s, hm(23)) is False
    assert automation.schedule_wants_on(s, hm(12)) is False
    s["light_on"], s["light_off"] = "22:00", "06:30"
    assert automation.schedule_wants_on(s, hm(23)) is True
    assert automation.schedule_wants_on(s, hm(3)) is True
    assert automation.schedule_wants_on(s, hm(6, 30)) is False
    assert automation.schedule_wants_on(s, hm(12)) is False
    s["light_auto"] = False
    assert automation.schedule_wants_on(s, hm(23)) is None
    s["light_auto"], s["light_off"] = True, ""
    assert automation.schedule_wants_on(s, hm(23)) is None


def test_parse_hhmm():
    assert automation.parse_hhmm("00:00") == 0
    assert automation.parse_hhmm("23:59") == 1439
    for bad in ("24:00", "12:60", "1200", "ab:cd", 1200, "1:2:3"):
        raises(AutomationError, automation.parse_hhmm, bad)


def test_light_schedule_is_edge_triggered():
    a = Automation()
    relays = {"light": False, "fan": False}
    actions, events = a.step({}, hm(18), relays)
    assert actions == [("light", True, "schedule")]
    assert events[0]["event"] == "automation"
    relays["light"] = False  # manual off after the edge holds
    actions, _ = a.step({}, hm(18, 5), relays)
    assert actions == []
    actions, _ = a.step({}, hm(23, 1), {"light": True, "fan": False})
    assert actions == [("light", False, "schedule")]
    # clock not set: nothing happens
    assert a.step({}, None, relays) == ([], [])


def test_fan_hysteresis_on_temperature_and_humidity():
    a = Automation()
    relays = {"light": False, "fan": False}
    assert a.step({"temperature": 27.0, "humidity": 50}, None, relays)[0] == []
    actions, _ = a.step({"temperature": 28.5, "humidity": 50}, None, relays)
    assert actions == [("fan", True, "climate")]
    relays["fan"] = True
    # between off and on thresholds: stays on
    assert a.step({"temperature": 27.0, "humidity": 50}, None, relays)[0] == []
    actions, _ = a.step({"temperature": 25.9, "humidity": 50}, None, relays)
    assert actions == [("fan", False, "climate")]
    relays["fan"] = False
    actions, _ = a.step({"temperature": 25.0, "humidity": 71}, None, relays)
    assert actions == [("fan", True, "climate")]
    relays["fan"] = True
    assert a.step({"temperature": 25.0, "humidity": 66}, None, relays)[0] == []
    actions, _ = a.step({"temperature": 25.0, "humidity": 64}, None, relays)
    assert actions == [("fan", False, "climate")]


def test_gas_alarm_forces_fan_and_overrides_manual_off():
    a = Automation({"fan_auto": False})
    relays = {"light": False, "fan": False}
    actions, events = a.step({"gas": 100}, None, relays)
    assert actions == []
    assert events == []
    actions, events = a.step({"gas": 650}, None, relays)
    assert actions == [("fan", True, "gas_alarm")]
    assert events[0]["event"] == "gas_alarm"
    assert events[0]["level"] == "critical"
    assert events[0]["value"] == 650
    relays["fan"] = True
    assert a.refuse_manual("fan", False)
    assert a.refuse_manual("fan", True) is None
    assert a.refuse_manual("light", False) is None
    # someone forces it off anyway: the next step turns it on again
    relays["fan"] = False
    actions, events = a.step({"gas": 500}, None, relays)
    assert actions == [("fan", True, "gas_alarm")]
    relays["fan"] = True
    # still above gas_clear: alarm holds
    assert a.step({"gas": 380}, None, relays) == ([], [])
    actions, events = a.step({"gas": 120}, None, relays)
    assert events[0]["event"] == "gas_clear"
    assert actions == [("fan", False, "gas_clear")]  # back to the state before
    assert not a.gas_alarm
    assert a.refuse_manual("fan", False) is None


def test_settings_validation_and_update():
    a = Automation()
    new = a.update_settings({"fan_temp_on": 30, "fan_temp_off": 27.5, "light_on": "07:00"})
    assert new["fan_temp_on"] == 30
    assert new["light_on"] == "07:00"
    bad = [
        {"fan_temp_on": "x"},
        {"fan_temp_off": 31},
        {"light_on": "25:00"},
        {"light_auto": 1},
        {"unknown": 1},
        {"fan_hum_on": 150},
        {"gas_clear": 1e9},
        {"fan_temp_on": float("nan")},
    ]
    for upd in bad:
        raises(AutomationError, a.update_settings, upd)
    assert a.settings["fan_temp_on"] == 30
    raises(AutomationError, automation.validate, "x")
    off = a.update_settings({"gas_alarm": None})
    assert off["gas_alarm"] is None
    assert a.step({"gas": 5000}, None, {"fan": False}) == ([], [])


def test_cached_schedule_matches_the_pure_function():
    a = Automation()
    variants = [
        {},
        {"light_on": "22:00", "light_off": "06:30"},
        {"light_auto": False},
        {"light_off": ""},
        {"light_on": "07:00", "light_off": "07:00"},
    ]
    for upd in variants:
        a.update_settings(upd)
        for minute in range(0, 1440, 7):
            assert a._schedule(minute) == automation.schedule_wants_on(a.settings, minute)

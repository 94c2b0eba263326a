from fwtest_helpers import MemoryStorage, raises
from iotfw import jsonx, settings


def test_defaults_when_no_file():
    cfg = settings.Config(MemoryStorage())
    data = cfg.load()
    assert data["interval"] == 2
    assert data["mqtt_port"] == 1883
    assert data["relays"] == {"light": 26, "fan": 27}
    assert not cfg.provisioned()
    assert cfg.load_errors == []


def test_corrupt_file_falls_back_to_defaults():
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe", b""):
        cfg = settings.Config(MemoryStorage({settings.CONFIG_FILE: raw}))
        data = cfg.load()
        assert data["interval"] == 2
        assert cfg.load_errors


def test_one_bad_value_keeps_the_rest():
    stored = {"interval": "fast", "mqtt_host": "broker.local", "bogus": 1}
    cfg = settings.Config(MemoryStorage({settings.CONFIG_FILE: jsonx.dumps(stored).encode()}))
    data = cfg.load()
    assert data["interval"] == 2
    assert data["mqtt_host"] == "broker.local"
    assert len(cfg.load_errors) == 2


def test_update_validates_persists_and_reports_changes():
    storage = MemoryStorage()
    cfg = settings.Config(storage)
    cfg.load()
    assert cfg.update({"interval": 5, "mqtt_port": 1883}) == ["interval"]
    again = settings.Config(storage)
    assert again.load()["interval"] == 5
    writes = storage.writes
    assert cfg.update({"interval": 5}) == []
    assert storage.writes == writes


def test_invalid_updates_change_nothing():
    cfg = settings.Config(MemoryStorage())
    cfg.load()
    bad = [
        {"interval": 0},
        {"interval": True},
        {"mqtt_port": 70000},
        {"mqtt_port": "1883"},
        {"nope": 1},
        {"relays": {"bad name": 4}},
        {"relays": {"light": 99}},
        {"automation": {"fan_temp_on": "hot"}},
        {"webhook": {"url": "ftp://x"}},
        {"watchdog_ms": 100},
        {"name": 5},
    ]
    for upd in bad:
        raises(settings.ConfigError, cfg.update, upd)
    raises(settings.ConfigError, cfg.update, {"interval": 3, "mqtt_port": -1})
    assert cfg.get("interval") == 2
    raises(settings.ConfigError, cfg.update, [1])


def test_public_masks_secrets():
    cfg = settings.Config(MemoryStorage())
    cfg.load()
    cfg.update({"wifi_password": "secret", "mqtt_host": "h", "wifi_ssid": "net"})
    pub = settings.public(cfg.data, ["wifi_password", "mqtt_host"])
    assert pub == {"wifi_password": settings.SECRET_MASK, "mqtt_host": "h"}
    assert cfg.provisioned()


def test_webhook_validation():
    hook = settings.validate_webhook(
        {"url": "http://h/x", "method": "get", "events": ["gas_alarm"]}
    )
    assert hook == {"url": "http://h/x", "method": "GET", "events": ["gas_alarm"]}
    raises(settings.ConfigError, settings.validate_webhook, {"events": ["nope"]})
    raises(settings.ConfigError, settings.validate_webhook, {"method": "PUT"})

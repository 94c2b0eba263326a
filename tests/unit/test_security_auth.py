"""Security primitives without services: hashes, tokens, throttling, policy, ACL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from amqtt.contexts import Action
from pydantic import ValidationError

from iotp.api.security import required_role
from iotp.broker.auth import AccountKind, account_kind, topic_allowed
from iotp.db.auth_models import User
from iotp.errors import AuthError
from iotp.services import auth
from iotp.services.auth import Role
from iotp.settings import Settings

# Written by `mosquitto_passwd -b pw dev1 secret123` (Mosquitto 2.0).
MOSQUITTO_LINE = (
    "dev1:$7$101$jXqksQDATgFsjPni$4OUhXg/3VgQklu16MdB6B90fuL9QZPCNlza80QV92vibaj3slBh8o"
    "GcnbjRgPWC1JMpdr21QyyF4REgeWfWp/g=="
)
STRONG = "k" * 40


def test_mqtt_secret_hash_is_mosquitto_compatible() -> None:
    stored = MOSQUITTO_LINE.split(":", 1)[1]
    assert auth.verify_mqtt_secret("secret123", stored)
    assert not auth.verify_mqtt_secret("secret124", stored)
    ours = auth.hash_mqtt_secret("s3cret-value")
    assert ours.startswith("$7$")
    assert auth.verify_mqtt_secret("s3cret-value", ours)
    assert not auth.verify_mqtt_secret("other", ours)
    assert not auth.verify_mqtt_secret("x", None)
    assert not auth.verify_mqtt_secret("x", "$6$garbage")


def test_passwords_are_argon2() -> None:
    h = auth.hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert auth.verify_password("correct horse", h)
    assert not auth.verify_password("wrong", h)
    assert not auth.verify_password("x", None)
    assert not auth.verify_password("x", "not-a-hash")


def _user() -> User:
    return User(id=7, username="u", password_hash="", role="operator", token_version=3)


def test_tokens_expire_and_carry_type() -> None:
    old = auth.issue_access_token(_user(), key=STRONG, minutes=1, now=1000)
    with pytest.raises(AuthError):  # expired long ago
        auth.decode_token(old.token, key=STRONG, expected_type="access")
    access = auth.issue_access_token(_user(), key=STRONG, minutes=1)
    assert access.expires_in == 60
    claims = auth.decode_token(access.token, key=STRONG, expected_type="access")
    assert claims["sub"] == "7"
    assert claims["role"] == "operator"
    assert claims["ver"] == 3
    with pytest.raises(AuthError):
        auth.decode_token(access.token, key=STRONG, expected_type="refresh")
    with pytest.raises(AuthError):
        auth.decode_token(access.token, key="another-key" * 4, expected_type="access")
    with pytest.raises(AuthError):
        auth.decode_token("garbage", key=STRONG, expected_type="access")


def test_signed_paths() -> None:
    path = "/api/firmware/3/download"
    url = auth.sign_path(path, key=STRONG, device_id="A1", command_id="c-1", expires_at=1060)
    signed_path, query = url.split("?")
    assert signed_path == path
    params = dict(parse_qsl(query))
    grant = auth.verify_signed_path(path, params, key=STRONG, now=1030)
    assert grant == auth.DownloadGrant("A1", "c-1", 1060)
    refused = [
        (path, params, 1061, "expired"),
        ("/api/firmware/4/download", params, 1030, "does not match"),
        (path, {**params, "exp": "9999"}, 1030, "does not match"),
        (path, {**params, "device": "B2"}, 1030, "does not match"),  # another device
        (path, {**params, "command": "c-2"}, 1030, "does not match"),
        (path, {k: v for k, v in params.items() if k != "device"}, 1030, "needs device"),
        (path, {**params, "exp": "-1"}, 1030, "epoch seconds"),
        (path, {**params, "sig": "é" * 64}, 1030, "does not match"),
    ]
    for p, q, now, reason in refused:
        with pytest.raises(auth.AuthError, match=reason):
            auth.verify_signed_path(p, q, key=STRONG, now=now)
    with pytest.raises(auth.AuthError, match="does not match"):
        auth.verify_signed_path(path, params, key="another-key" * 4, now=1030)


@pytest.mark.parametrize(
    "values",
    [
        {"secret_key": "changeme"},
        {"secret_key": "short"},
        {"secret_key": STRONG, "provisioning_secret": "secret"},
        {"secret_key": STRONG, "admin_password": "admin"},
    ],
)
def test_secure_mode_refuses_weak_secrets(values: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="secure mode refuses"):
        Settings(secure=True, **values)  # type: ignore[arg-type]


def test_secure_by_default_and_missing_secrets_generated_once(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.secure
    assert sorted(auth.ensure_secrets(s)) == ["fleet_secret", "secret_key"]
    key, fleet = s.secret_key.get_secret_value(), s.provisioning_secret.get_secret_value()
    assert len(key) >= 32
    assert len(fleet) >= 16
    again = Settings(data_dir=tmp_path)  # another process sharing the data dir
    assert auth.ensure_secrets(again) == []
    assert again.secret_key.get_secret_value() == key
    assert again.provisioning_secret.get_secret_value() == fleet
    assert (tmp_path / "fleet_secret").stat().st_mode & 0o777 == 0o600
    opened = Settings(data_dir=tmp_path / "o", open=True)
    assert auth.ensure_secrets(opened) == ["secret_key"]  # open mode: no fleet secret


def test_one_mode_setting_iotp_open_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOTP_OPEN", raising=False)
    monkeypatch.setenv("IOTP_SECURE", "false")  # the older, inverse name
    assert Settings().open
    monkeypatch.setenv("IOTP_OPEN", "false")  # both set: IOTP_OPEN decides
    assert Settings().secure
    monkeypatch.delenv("IOTP_SECURE")
    monkeypatch.setenv("IOTP_OPEN", "true")
    assert not Settings().secure


def test_secure_mode_with_strong_secrets_and_open_mode_defaults() -> None:
    s = Settings(secure=True, secret_key=STRONG, provisioning_secret="p" * 20)  # type: ignore[arg-type]
    assert s.effective_device_rate_limit == 20.0
    url = s.mqtt("mqtt://broker:1883")
    assert url.username == "iotp-worker"
    assert url.password == s.mqtt_service_password("worker")
    assert s.mqtt("mqtt://broker:1883", role="api").username == "iotp-api"
    assert len(set(s.mqtt_service_accounts().values())) == 3  # a password per role
    assert "***" in str(url)
    open_mode = Settings(open=True)
    assert open_mode.effective_device_rate_limit == 0.0


@pytest.mark.parametrize(
    ("path", "method", "role"),
    [
        ("/api/health", "GET", None),
        ("/api/auth/token", "POST", None),
        ("/api/auth/me", "GET", Role.VIEWER),
        ("/api/auth/password", "POST", Role.VIEWER),
        ("/api/devices", "GET", Role.VIEWER),
        ("/api/devices/X/commands", "POST", Role.OPERATOR),
        ("/api/anything-new", "DELETE", Role.OPERATOR),
        ("/api/ws", "WEBSOCKET", Role.VIEWER),
        ("/api/users", "GET", Role.ADMIN),
        ("/api/users/1", "PATCH", Role.ADMIN),
        ("/api/api-keys", "POST", Role.ADMIN),
        ("/api/credentials/X/approve", "POST", Role.ADMIN),
        ("/api/usersfoo", "GET", Role.VIEWER),
    ],
)
def test_role_rules(path: str, method: str, role: Role | None) -> None:
    assert required_role(path, method) == role


def test_declared_roles() -> None:
    assert required_role("/api/x", "GET", "admin") is Role.ADMIN
    assert required_role("/api/x", "GET", "public") is None


def test_topic_acl() -> None:
    dev = AccountKind.DEVICE
    assert account_kind("A1", {"iotp-worker"}) is dev
    assert account_kind("iotp-worker", {"iotp-worker"}) is AccountKind.SERVICE
    assert account_kind("provision", {"iotp-worker"}) is AccountKind.PROVISION
    assert account_kind("bad/id", {"iotp-worker"}) is None
    assert account_kind(None, {"iotp-worker"}) is None
    pub, sub, rcv = Action.PUBLISH, Action.SUBSCRIBE, Action.RECEIVE
    for kind in ("data", "status", "info", "state", "events", "ack"):
        assert topic_allowed(dev, "A1", "A1", f"devices/A1/{kind}", pub)
    for topic in (
        "devices/B2/data",
        "devices/A1/commands",
        "devices/A1",
        "devices/A1/",
        "devices/A1/data/x",
        "iotp/events/x",
        "provision/A1/request",
    ):
        assert not topic_allowed(dev, "A1", "A1", topic, pub), topic
    assert topic_allowed(dev, "A1", "A1", "devices/A1/commands", sub)
    assert topic_allowed(dev, "A1", "A1", "devices/A1/commands", rcv)
    for topic in ("devices/+/commands", "devices/#", "#", "devices/B2/commands", "devices/A1/+"):
        assert not topic_allowed(dev, "A1", "A1", topic, sub), topic
    prov = AccountKind.PROVISION
    assert topic_allowed(prov, "provision", "A1", "provision/A1/request", pub)
    assert not topic_allowed(prov, "provision", "A1", "provision/B2/request", pub)
    assert not topic_allowed(prov, "provision", "A1", "devices/A1/data", pub)
    assert topic_allowed(prov, "provision", "A1", "provision/A1/response", sub)
    assert not topic_allowed(prov, "provision", "A1", "provision/+/response", sub)
    assert topic_allowed(AccountKind.SERVICE, "iotp", "w", "devices/+/data", sub)


def test_openapi_documents_the_security_schemes() -> None:
    from pathlib import Path

    from iotp.api.app import create_app

    schema = create_app(Settings(data_dir=Path("/nonexistent"))).openapi()
    assert set(schema["components"]["securitySchemes"]) == {"OAuth2PasswordBearer", "APIKeyHeader"}
    assert schema["paths"]["/api/health"]["get"]["security"] == []
    assert schema["paths"]["/api/auth/token"]["post"]["security"] == []
    assert "security" not in schema["paths"]["/api/devices"]["get"]  # the global default

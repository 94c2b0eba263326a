"""Every identifier checked with Python ``re`` refuses a trailing newline.

``re.match`` with ``$`` accepts ``"A1\\n"`` (``$`` matches before a final newline); an id
like that would become a second device, a topic level or a file name that differs from
what an admin sees. Each check below is the public function that guards the identifier.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from amqtt.contexts import Action

from iotp.broker.auth import AccountKind, account_kind, topic_allowed
from iotp.errors import InvalidRequestError
from iotp.protocol import RejectedMessage, parse_topic
from iotp.protocol import payloads as p
from iotp.protocol.topics import TopicError
from iotp.services import credentials, firmware, groups, telemetry, users
from iotp.services.auth import Role
from iotp.services.commands import validate, validate_automation

NEWLINE_IDS = ["A1\n", "A1\r\n", "\nA1"]


def _raises(call: Callable[[], Any], *errors: type[BaseException]) -> None:
    with pytest.raises(errors):
        call()


@pytest.mark.parametrize("bad", NEWLINE_IDS)
def test_device_id_in_topic(bad: str) -> None:
    assert parse_topic("devices/A1/data")[0] == "A1"
    _raises(lambda: parse_topic(f"devices/{bad}/data"), TopicError)


@pytest.mark.parametrize("bad", NEWLINE_IDS)
def test_device_id_for_credentials(bad: str) -> None:
    credentials._check_id("A1")
    _raises(lambda: credentials._check_id(bad), InvalidRequestError)


@pytest.mark.parametrize("bad", NEWLINE_IDS)
def test_mqtt_account_names(bad: str) -> None:
    assert account_kind("A1", "iotp") is AccountKind.DEVICE
    assert account_kind(bad, "iotp") is None
    # a provisioning client may only use its own, valid id
    assert topic_allowed(
        AccountKind.PROVISION, "provision", "A1", "provision/A1/request", Action.PUBLISH
    )
    assert not topic_allowed(
        AccountKind.PROVISION, "provision", bad, f"provision/{bad}/request", Action.PUBLISH
    )


@pytest.mark.parametrize("bad", ["t\n", "temperature\n"])
def test_metric_names_in_data(bad: str) -> None:
    assert p.parse_data(b'{"t": 1}', 0.0).metrics == {"t": 1.0}
    _raises(lambda: p.parse_data(orjson.dumps({bad: 1}), 0.0), RejectedMessage)


@pytest.mark.parametrize("bad", ["t\n", "temperature\n"])
def test_metric_name_for_queries(bad: str) -> None:
    telemetry._metric_expr("sqlite", "t")
    _raises(lambda: telemetry._metric_expr("sqlite", bad), ValueError)


@pytest.mark.parametrize("bad", ["lab\n"])
def test_tag_names(bad: str) -> None:
    groups.Selector(tags=["lab"]).check()
    _raises(lambda: groups.Selector(tags=[bad]).check(), InvalidRequestError)


async def test_username_is_checked_before_anything_is_stored() -> None:
    with pytest.raises(InvalidRequestError, match="username must match"):
        await users.create(None, username="admin\n", password="x" * 20, role=Role.ADMIN)  # type: ignore[arg-type]


async def test_firmware_version_is_checked_before_anything_is_stored(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="version must be"):
        await firmware.upload(None, data_dir=tmp_path, version="1.2.3\n", data=b"x")  # type: ignore[arg-type]


def test_command_identifiers() -> None:
    sha = "a" * 64
    caps = ["ota", "automation", "cmd:blink"]
    validate("ota", {"url": "http://h/f", "sha256": sha, "version": "1"}, caps)
    _raises(
        lambda: validate("ota", {"url": "http://h/f", "sha256": sha + "\n", "version": "1"}, caps),
        InvalidRequestError,
    )
    validate("custom", {"name": "blink"}, caps)
    _raises(lambda: validate("custom", {"name": "blink\n"}, caps), InvalidRequestError)
    validate("set_config", {"interval": 5}, caps)
    _raises(lambda: validate("set_config", {"interval\n": 5}, caps), InvalidRequestError)
    validate_automation({"light_on": "22:00"})
    _raises(lambda: validate_automation({"light_on": "22:00\n"}), InvalidRequestError)


def test_pydantic_patterns_anchor_at_the_very_end() -> None:
    """Patterns given to pydantic (API paths and bodies) run on its own regex engine,
    where ``$`` is the end of the text: the same ids are refused there too."""
    from pydantic import TypeAdapter, ValidationError

    from iotp.api.routes.credentials import DeviceId

    adapter: TypeAdapter[str] = TypeAdapter(DeviceId)
    assert adapter.validate_python("A1") == "A1"
    _raises(lambda: adapter.validate_python("A1\n"), ValidationError)


def test_provisioning_fingerprint_vector() -> None:
    """The firmware shows the same value (tests/firmware/pure/test_fw_provision.py):
    ``printf %s device-secret-0123456789abcdef | sha256sum``, first 12 hex digits."""
    assert credentials.fingerprint("device-secret-0123456789abcdef") == "B2BA-7FB3-4363"

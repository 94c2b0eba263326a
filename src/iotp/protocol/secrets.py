"""Command parameters that carry secrets (docs/protocol.md, set_config).

The one list: the platform redacts these wherever a command is shown (API answers,
``command_update`` events, webhooks, logs) and keeps their values only, encrypted, while
the command may still be published (services.commands)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SECRET_PARAMS = frozenset({"mqtt_password", "wifi_password", "fleet_secret", "provision_secret"})
REDACTED = "[secret]"


def secret_keys(params: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in params if k in SECRET_PARAMS)


def redact(value: Any) -> Any:
    """An object with each secret value replaced by REDACTED (anything else as is)."""
    if not isinstance(value, Mapping):
        return value
    return {k: (REDACTED if k in SECRET_PARAMS else v) for k, v in value.items()}


def redact_deep(value: Any) -> Any:
    """Like :func:`redact`, at every depth: for what a device reports of itself (its
    state), where a firmware may echo its configuration, secrets included."""
    if isinstance(value, Mapping):
        return {k: (REDACTED if k in SECRET_PARAMS else redact_deep(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_deep(v) for v in value]
    return value


def split(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params with each secret value replaced by REDACTED, the secret values)."""
    hidden = {k: v for k, v in params.items() if k in SECRET_PARAMS}
    return redact(params), hidden

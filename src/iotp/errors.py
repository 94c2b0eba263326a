"""The project's small exception hierarchy."""

from __future__ import annotations


class IotpError(Exception):
    """Root of every error the platform raises on purpose."""


class NotFoundError(IotpError):
    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"{what} {key!r} not found")
        self.what = what
        self.key = key


class InvalidRequestError(IotpError):
    """A request that is well-formed but cannot be carried out (maps to HTTP 422)."""


class ConfigurationError(IotpError):
    """Settings that cannot work (bad URL, port taken, ...)."""

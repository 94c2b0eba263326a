"""The project's exception hierarchy: what the platform raises on purpose. The API maps
it to HTTP in one place (``iotp.api.errors``)."""

from __future__ import annotations


class IotpError(Exception):
    """Root of every error the platform raises on purpose (HTTP 400 unless a subclass
    says otherwise)."""


class NotFoundError(IotpError):
    """No such resource (HTTP 404)."""

    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"{what} {key!r} not found")
        self.what = what
        self.key = key


class InvalidRequestError(IotpError):
    """A request that is well-formed but cannot be carried out (HTTP 422)."""


class ConflictError(IotpError):
    """The request is valid but the resource's current state forbids it, or the name it
    asks for is taken (HTTP 409)."""


class AuthError(IotpError):
    """Bad credentials or token (HTTP 401)."""


class ConfigurationError(IotpError):
    """Settings that cannot work (bad URL, port taken, ...)."""

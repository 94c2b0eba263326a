"""Domain errors to HTTP: one mapping (iotp.api.errors) for every route."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from iotp.api import errors
from iotp.errors import AuthError, ConflictError, InvalidRequestError, IotpError, NotFoundError
from iotp.services.alerts import AlertConflict
from iotp.services.commands import InvalidTransition


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (NotFoundError("device", "X"), 404),
        (ConflictError("user 'a' exists"), 409),
        (InvalidTransition("sent", "cancelled"), 409),
        (AlertConflict("alert 3 is cleared"), 409),
        (InvalidRequestError("bad"), 422),
        (AuthError("invalid or expired token"), 401),
        (IotpError("something else"), 400),
    ],
)
async def test_each_domain_error_has_one_status_and_says_why(exc: IotpError, status: int) -> None:
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/boom")
    assert (r.status_code, r.json()) == (status, {"detail": str(exc)})

"""Domain errors (iotp.errors) as HTTP answers: the one mapping, installed as the app's
exception handler, so routes raise or let through what the services raise."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from iotp.errors import AuthError, ConflictError, InvalidRequestError, IotpError, NotFoundError

# Most specific first; any other IotpError is a 400 with its reason.
HTTP_STATUS: tuple[tuple[type[IotpError], int], ...] = (
    (NotFoundError, status.HTTP_404_NOT_FOUND),
    (ConflictError, status.HTTP_409_CONFLICT),
    (InvalidRequestError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (AuthError, status.HTTP_401_UNAUTHORIZED),
)


def http_status(exc: IotpError) -> int:
    for kind, code in HTTP_STATUS:
        if isinstance(exc, kind):
            return code
    return status.HTTP_400_BAD_REQUEST


async def _answer(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IotpError)  # registered for IotpError only
    return JSONResponse({"detail": str(exc)}, status_code=http_status(exc))


def install(app: FastAPI) -> None:
    app.add_exception_handler(IotpError, _answer)

"""Sign-in (OAuth2 password flow), token refresh, own profile and password."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.api.deps import SessionDep
from iotp.api.security import CurrentPrincipal, SecurityContext
from iotp.db.auth_models import User
from iotp.services import users as user_service
from iotp.services.auth import AuthError, LoginAttempt, decode_token, issue_tokens
from iotp.services.errors import InvalidRequestError, NotFoundError

router = APIRouter(prefix="/api/auth", tags=["auth"])


class TokenPublic(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class RefreshRequest(BaseModel):
    refresh_token: str = Field(max_length=4096)


class MePublic(BaseModel):
    kind: str
    id: int
    name: str
    role: str


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


def _security(request: Request) -> SecurityContext:
    sec: SecurityContext = request.app.state.security
    return sec


async def _attempt(request: Request, session: AsyncSession, username: str) -> LoginAttempt:
    """Record a password attempt before it is verified (HTTP 429 past the limits), and
    wait as long as the throttle asks (docs/security.md#sign-in)."""
    sec = _security(request)
    address = request.client.host if request.client else "?"
    attempt = await sec.login_throttle.attempt(session, address, username)
    await session.commit()
    if attempt.retry_after > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed sign-ins; try again later",
            headers={"Retry-After": str(math.ceil(attempt.retry_after))},
        )
    if attempt.delay > 0:
        await asyncio.sleep(attempt.delay)
    return attempt


def _tokens(sec: SecurityContext, user: User) -> TokenPublic:
    pair = issue_tokens(
        user,
        key=sec.secret_key,
        access_minutes=sec.settings.access_token_minutes,
        refresh_days=sec.settings.refresh_token_days,
    )
    return TokenPublic(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
    )


@router.post(
    "/token",
    response_model=TokenPublic,
    responses={401: {"description": "bad credentials"}, 429: {"description": "too many"}},
)
async def login(
    request: Request,
    response: Response,
    session: SessionDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> TokenPublic:
    """OAuth2 password flow: form fields `username`, `password`."""
    sec = _security(request)
    attempt = await _attempt(request, session, form.username)
    try:
        user = await user_service.authenticate(
            session, username=form.username, password=form.password, verifier=sec.passwords
        )
    except AuthError:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "incorrect username or password",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    await sec.login_throttle.succeeded(session, attempt)
    await session.commit()
    response.headers["Cache-Control"] = "no-store"
    return _tokens(sec, user)


@router.post("/refresh", response_model=TokenPublic, responses={401: {}})
async def refresh(request: Request, session: SessionDep, body: RefreshRequest) -> TokenPublic:
    """A new token pair for a valid refresh token (invalid after a password change)."""
    sec = _security(request)
    denied = HTTPException(
        status.HTTP_401_UNAUTHORIZED, "invalid refresh token", {"WWW-Authenticate": "Bearer"}
    )
    try:
        claims = decode_token(body.refresh_token, key=sec.secret_key, expected_type="refresh")
        user = await user_service.get(session, int(claims["sub"]))
    except (AuthError, NotFoundError, ValueError):
        raise denied from None
    if user.disabled or claims.get("ver") != user.token_version:
        raise denied
    return _tokens(sec, user)


@router.get("/me", response_model=MePublic)
async def me(principal: CurrentPrincipal) -> MePublic:
    return MePublic(
        kind=principal.kind, id=principal.id, name=principal.name, role=principal.role.value
    )


@router.post(
    "/password", status_code=status.HTTP_204_NO_CONTENT, responses={400: {}, 403: {}, 429: {}}
)
async def change_password(
    request: Request, principal: CurrentPrincipal, session: SessionDep, body: PasswordChange
) -> Response:
    """Change your own password; signs you out everywhere else."""
    if principal.kind != "user":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "API keys have no password")
    user = await user_service.get(session, principal.id)
    sec = _security(request)
    attempt = await _attempt(request, session, user.username)
    if not await sec.passwords.verify(body.current_password, user.password_hash):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "current password is wrong")
    await sec.login_throttle.succeeded(session, attempt)
    try:
        await user_service.update(session, user_id=user.id, password=body.new_password)
    except InvalidRequestError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    await session.commit()
    _security(request).changed()
    return Response(status_code=status.HTTP_204_NO_CONTENT)

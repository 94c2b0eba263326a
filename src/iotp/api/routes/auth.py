"""Sign-in (OAuth2 password flow), token refresh, logout, own profile and password.

The access token is answered in the body (clients keep it in memory). The refresh token
never is: it lives in the httpOnly cookie ``iotp_refresh`` (SameSite=Strict, path
/api/auth), out of reach of page scripts. Requests that use it (refresh, logout) must
also send the session's CSRF token in ``X-CSRF-Token``; the dashboard reads it from the
``iotp_csrf`` cookie, which another site can neither read nor send."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.api.deps import SessionDep
from iotp.api.security import CurrentPrincipal, SecurityContext
from iotp.db.auth_models import RefreshToken, User
from iotp.errors import AuthError
from iotp.services import sessions
from iotp.services import users as user_service
from iotp.services.auth import LoginAttempt, issue_access_token

router = APIRouter(prefix="/api/auth", tags=["auth"])


REFRESH_COOKIE = "iotp_refresh"
CSRF_COOKIE = "iotp_csrf"
CSRF_HEADER = "X-CSRF-Token"


class TokenPublic(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
    # Send it as X-CSRF-Token with /api/auth/refresh and /api/auth/logout.
    csrf_token: str


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


def _answer(
    request: Request, response: Response, user: User, issued: sessions.Issued
) -> TokenPublic:
    """The access token in the body, the refresh token in its cookie."""
    sec = _security(request)
    access = issue_access_token(user, key=sec.secret_key, minutes=sec.settings.access_token_minutes)
    csrf = sessions.csrf_token(issued.family, key=sec.secret_key)
    max_age = max(int(issued.expires_at - time.time()), 0)
    secure = request.url.scheme == "https"  # behind a TLS proxy: X-Forwarded-Proto
    response.set_cookie(
        REFRESH_COOKIE,
        issued.token,
        max_age=max_age,
        path="/api/auth",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    response.set_cookie(
        CSRF_COOKIE, csrf, max_age=max_age, path="/", secure=secure, samesite="strict"
    )
    response.headers["Cache-Control"] = "no-store"
    return TokenPublic(access_token=access.token, expires_in=access.expires_in, csrf_token=csrf)


async def _session_of(request: Request, session: AsyncSession) -> RefreshToken:
    """The refresh token of the cookie, with the CSRF token that proves the request
    comes from the dashboard's own page."""
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "no session (sign in)")
    try:
        row = await sessions.find(session, token)
    except AuthError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    presented = request.headers.get(CSRF_HEADER)
    if not sessions.csrf_matches(row.family, presented, key=_security(request).secret_key):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"missing or wrong {CSRF_HEADER} header")
    return row


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
    issued = await sessions.start(session, user=user, days=sec.settings.refresh_token_days)
    await session.commit()
    return _answer(request, response, user, issued)


@router.post("/refresh", response_model=TokenPublic, responses={401: {}, 403: {}})
async def refresh(request: Request, response: Response, session: SessionDep) -> TokenPublic:
    """A new access token, for the refresh token in the cookie (which is replaced by the
    next one: each is good once). A refresh token used twice revokes its session."""
    row = await _session_of(request, session)
    try:
        user, issued = await sessions.rotate(
            session, row, days=_security(request).settings.refresh_token_days
        )
    except AuthError as exc:
        await session.commit()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    await session.commit()
    return _answer(request, response, user, issued)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses={403: {}})
async def logout(request: Request, session: SessionDep) -> Response:
    """Revoke this session's refresh tokens and clear its cookies."""
    answer = Response(status_code=status.HTTP_204_NO_CONTENT)
    if request.cookies.get(REFRESH_COOKIE):
        try:
            row = await _session_of(request, session)
        except HTTPException as exc:
            if exc.status_code != status.HTTP_401_UNAUTHORIZED:
                raise
        else:
            await sessions.revoke_family(session, row.family)
            await session.commit()
    answer.delete_cookie(REFRESH_COOKIE, path="/api/auth", httponly=True, samesite="strict")
    answer.delete_cookie(CSRF_COOKIE, path="/", samesite="strict")
    return answer


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
    await user_service.update(session, user_id=user.id, password=body.new_password)
    await session.commit()
    _security(request).changed()
    return Response(status_code=status.HTTP_204_NO_CONTENT)

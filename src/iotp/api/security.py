"""API authentication and authorization, applied centrally.

``authorize`` is a dependency of the whole app (``FastAPI(dependencies=...)``), so every
route, including routes added later in any router, needs a token unless its path is in
``PUBLIC_PATHS``. The role a route needs comes from ``required_role``: reads need a
viewer, changes an operator, and user, API-key and device-credential management an
admin. A route may declare its own role with ``openapi_extra={ROLE_KEY: "admin"}``
(or ``"public"``; the authorization matrix test then asks for the allow-list to be
updated on purpose). A GET with a valid signature (services.auth.sign_path) needs no
token while the ota command it was made for is open: that is how devices download OTA
bundles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, WebSocketException, status
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import DataError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iotp.errors import AuthError, ConfigurationError, InvalidRequestError, NotFoundError
from iotp.services import firmware as firmware_service
from iotp.services import users as user_service
from iotp.services.auth import (
    LoginThrottle,
    PasswordVerifier,
    Role,
    api_key_matches,
    api_key_prefix,
    decode_token,
    find_api_key,
    looks_like_api_key,
    resolve_secret_key,
    touch_api_key,
    verify_signed_path,
)
from iotp.settings import Settings

log = logging.getLogger(__name__)

# Refresh and logout authenticate with the session cookie and its CSRF token instead.
PUBLIC_PATHS = frozenset(
    {"/api/health", "/api/auth/token", "/api/auth/refresh", "/api/auth/logout"}
)
# Any signed-in principal, whatever the method (own profile, own password).
SELF_SERVICE_PATHS = frozenset({"/api/auth/me", "/api/auth/password"})
ADMIN_PATH = re.compile(r"^/api/(users|api-keys|credentials)(/|$)")  # concrete paths
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ROLE_KEY = "x-iotp-role"
PUBLIC = "public"
# Routes that enforce a (larger) body limit of their own: firmware uploads.
BODY_LIMIT_EXEMPT = frozenset({("POST", "/api/firmware")})
# How long a process trusts what it read about a user or API key (REST), and how often
# it re-checks the principals of its open WebSockets: the most a change made on another
# replica (or with the CLI) takes to be enforced here.
PRINCIPAL_CACHE_SECONDS = 1.0
REVOCATION_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (by token) or an API key."""

    kind: str  # "user" | "api_key"
    id: int
    name: str
    role: Role
    version: int = 0  # users: the token version the token was signed with
    expires_at: float | None = None  # users: when the (verified) access token expires


@dataclass
class _UserSnap:
    username: str
    role: str
    disabled: bool
    token_version: int


@dataclass
class _KeySnap:
    id: int
    prefix: str
    key_hash: str
    role: str
    revoked: bool
    last_used_at: float | None


class PrincipalCache:
    """What ``authorize`` needs about users and API keys, kept per process for at most
    ``ttl`` seconds, so a request does not cost a database read just to check its
    token. A change made through this process clears it at once (``clear``); a change
    made elsewhere (another replica, `iotp user ...`) is seen within ``ttl``. Only rows
    that exist are cached (random API-key prefixes cannot fill it)."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._users: dict[int, tuple[float, _UserSnap]] = {}
        self._keys: dict[str, tuple[float, _KeySnap]] = {}

    def clear(self) -> None:
        self._users.clear()
        self._keys.clear()

    async def user(self, sessions: Any, user_id: int) -> _UserSnap | None:
        now = time.monotonic()
        hit = self._users.get(user_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        async with sessions() as session:
            try:
                user = await user_service.get(session, user_id)
            except NotFoundError:
                self._users.pop(user_id, None)
                return None
        snap = _UserSnap(user.username, user.role, user.disabled, user.token_version)
        if self.ttl > 0:
            if len(self._users) >= self.MAX_ENTRIES:
                self._users.clear()
            self._users[user_id] = (now, snap)
        return snap

    async def api_key(self, sessions: Any, key: str) -> _KeySnap:
        prefix = api_key_prefix(key)
        now = time.monotonic()
        hit = self._keys.get(prefix)
        snap = hit[1] if hit is not None and now - hit[0] < self.ttl else None
        if snap is None:
            async with sessions() as session:
                row = await find_api_key(session, prefix)
            if row is None:
                self._keys.pop(prefix, None)
                raise AuthError("invalid API key")
            snap = _KeySnap(
                row.id,
                row.prefix,
                row.key_hash,
                row.role,
                row.revoked_at is not None,
                row.last_used_at,
            )
            if self.ttl > 0:
                if len(self._keys) >= self.MAX_ENTRIES:
                    self._keys.clear()
                self._keys[prefix] = (now, snap)
        if not api_key_matches(key, snap.key_hash):
            raise AuthError("invalid API key")
        if snap.revoked:
            raise AuthError("API key revoked")
        wall = time.time()
        if snap.last_used_at is None or wall - snap.last_used_at > 60:  # bounded write rate
            snap.last_used_at = wall
            async with sessions() as session:
                await touch_api_key(session, snap.id, wall)
        return snap


class _Watched:
    __slots__ = ("principal", "revoked", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.principal: Principal | None = None
        self.revoked = asyncio.Event()


class SocketGuard:
    """Cuts open WebSockets (close code 1008, reason "revoked") soon after their
    principal loses its right: a user deleted, disabled, or whose role or password
    changed (its token version moved on), or an API key revoked.

    Every API process re-reads, every ``poll`` seconds, the users and keys behind its
    own open sockets (one query each, only while sockets are open). Because the
    database is the signal, a change reaches every replica, including changes made with
    `iotp user ...` on the command line, and none is lost while a process is
    reconnecting to anything. A change made through this process wakes the check at
    once (``wake``)."""

    def __init__(self, poll: float) -> None:
        self.poll = poll
        self.cut_total = 0
        self._sockets: set[_Watched] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def watch(self, scope: Scope, sessions: Any) -> _Watched:
        watched = _Watched(scope)
        self._sockets.add(watched)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(sessions), name="ws-revocations")
        return watched

    def unwatch(self, watched: _Watched) -> None:
        self._sockets.discard(watched)

    def wake(self) -> None:
        self._wake.set()

    async def _run(self, sessions: Any) -> None:
        while self._sockets:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)
            self._wake.clear()
            try:
                await self.check(sessions)
            except Exception as exc:  # noqa: BLE001 - a DB hiccup: try again next round
                log.warning("checking WebSocket principals failed: %s", exc)

    async def check(self, sessions: Any) -> None:
        from iotp.db.auth_models import ApiKey, User

        for w in self._sockets:
            if w.principal is None:  # set by authorize during the handshake
                principal = w.scope.get("state", {}).get("principal")
                w.principal = principal if isinstance(principal, Principal) else None
        live = [w for w in self._sockets if w.principal is not None and not w.revoked.is_set()]
        user_ids = {w.principal.id for w in live if w.principal and w.principal.kind == "user"}
        key_ids = {w.principal.id for w in live if w.principal and w.principal.kind == "api_key"}
        users: dict[int, tuple[int, bool]] = {}
        keys: dict[int, bool] = {}
        async with sessions() as session:
            if user_ids:
                rows = await session.execute(
                    select(User.id, User.token_version, User.disabled).where(User.id.in_(user_ids))
                )
                users = {r.id: (r.token_version, r.disabled) for r in rows}
            if key_ids:
                rows = await session.execute(
                    select(ApiKey.id, ApiKey.revoked_at).where(ApiKey.id.in_(key_ids))
                )
                keys = {r.id: r.revoked_at is None for r in rows}
        for w in live:
            p = w.principal
            assert p is not None
            if p.kind == "user":
                ok = users.get(p.id) == (p.version, False)
            else:
                ok = keys.get(p.id, False)
            if not ok:
                log.info("closing a WebSocket of %s: access revoked", p.name)
                self.cut_total += 1
                w.revoked.set()


class SecurityContext:
    """Per-app security state, created in the lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secret_key = resolve_secret_key(settings)
        self.login_throttle = LoginThrottle(
            settings.login_max_failures,
            settings.login_window_seconds,
            address_max_failures=settings.login_address_max_failures,
            max_delay=settings.login_max_delay_seconds,
        )
        self.passwords = PasswordVerifier(settings.login_verify_concurrency)
        self.principals = PrincipalCache(PRINCIPAL_CACHE_SECONDS)
        self.sockets = SocketGuard(REVOCATION_POLL_SECONDS)

    def changed(self) -> None:
        """A user or an API key changed through this process: forget what is cached and
        re-check the open WebSockets now (other processes notice within a second)."""
        self.principals.clear()
        self.sockets.wake()


def required_role(path: str, method: str, declared: str | None = None) -> Role | None:
    """None: public. ``declared`` is a route's own ROLE_KEY, if any."""
    if path in PUBLIC_PATHS:
        return None
    if declared == PUBLIC:
        return None
    if declared is not None:
        return Role(declared)
    if path in SELF_SERVICE_PATHS:
        return Role.VIEWER
    if ADMIN_PATH.match(path):
        return Role.ADMIN
    if method == "WEBSOCKET" or method in READ_METHODS:
        return Role.VIEWER
    return Role.OPERATOR


def get_route_path(scope: Scope) -> str:
    """The path the router matches on (without a proxy's root_path), as Starlette does."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


def declared_role(route: object) -> str | None:
    extra = getattr(route, "openapi_extra", None) or {}
    declared = extra.get(ROLE_KEY)
    return declared if isinstance(declared, str) else None


def _token_from(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    api_key = conn.headers.get("x-api-key")
    if api_key:
        return api_key.strip()
    if conn.scope["type"] == "websocket":  # browsers cannot set headers on a WebSocket
        return conn.query_params.get("token") or None
    return None


async def _resolve(conn: HTTPConnection, token: str) -> Principal:
    from iotp.api.state import ApiState

    api: ApiState = conn.app.state.iotp
    sec: SecurityContext = conn.app.state.security
    if looks_like_api_key(token):
        key = await sec.principals.api_key(api.sessions, token)
        return Principal("api_key", key.id, f"key:{key.prefix}", Role(key.role))
    claims = decode_token(token, key=sec.secret_key, expected_type="access")
    try:
        user_id = int(claims["sub"])
    except ValueError:
        raise AuthError("unknown user") from None
    user = await sec.principals.user(api.sessions, user_id)
    if user is None:
        raise AuthError("unknown user")
    if user.disabled or claims.get("ver") != user.token_version:
        raise AuthError("token revoked")
    return Principal(
        "user", user_id, user.username, Role(user.role), user.token_version, float(claims["exp"])
    )


def _deny(conn: HTTPConnection, code: int, detail: str) -> Exception:
    if conn.scope["type"] == "websocket":
        return WebSocketException(status.WS_1008_POLICY_VIOLATION, detail)
    headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
    return HTTPException(code, detail, headers=headers)


async def _check_signed(conn: HTTPConnection, path: str) -> None:
    """A signed URL (services.auth.sign_path) stands in for a token: 403 with the
    reason when it is forged, for another path, expired or its command has ended."""
    from iotp.api.state import ApiState

    sec: SecurityContext = conn.app.state.security
    api: ApiState = conn.app.state.iotp
    try:
        grant = verify_signed_path(path, conn.query_params, key=sec.secret_key)
        async with api.sessions() as session:
            await firmware_service.check_download_grant(session, grant)
    except AuthError as exc:
        log.info("signed URL for %s refused: %s", path, exc)
        raise _deny(conn, status.HTTP_403_FORBIDDEN, f"signed URL refused: {exc}") from None


async def authorize(conn: HTTPConnection) -> Principal | None:
    """The app-wide dependency: authenticate, then check the route's role."""
    method = "WEBSOCKET" if conn.scope["type"] == "websocket" else conn.scope["method"]
    # The concrete path the router matched (templates lose include-time prefixes).
    path = get_route_path(conn.scope)
    needed = required_role(path, method, declared_role(conn.scope.get("route")))
    if needed is None:
        return None
    if method == "GET" and "sig" in conn.query_params:
        await _check_signed(conn, path)
        return None  # a device's OTA download: this path, while its command is open
    token = _token_from(conn)
    if token is None:
        raise _deny(conn, status.HTTP_401_UNAUTHORIZED, "not authenticated")
    try:
        principal = await _resolve(conn, token)
    except AuthError as exc:
        raise _deny(conn, status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    if not principal.role.allows(needed):
        raise _deny(conn, status.HTTP_403_FORBIDDEN, f"needs the {needed.value} role")
    conn.state.principal = principal
    return principal


async def get_principal(conn: HTTPConnection) -> Principal:  # async: no thread-pool hop
    principal: Principal | None = getattr(conn.state, "principal", None)
    if principal is None:  # only on public routes, which must not ask for one
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not authenticated")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


# ---- HTTP hardening middleware ---------------------------------------------------------

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
# The dashboard is self-contained; Swagger UI (/docs) loads its assets from a CDN.
CSP = (
    b"default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    b"connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'self'; "
    b"form-action 'self'; object-src 'none'"
)
CSP_EXEMPT = ("/docs", "/redoc")


class _TooLarge(Exception):
    pass


class HardeningMiddleware:
    """Security headers on every response, and a request body size limit (413)."""

    def __init__(self, app: ASGIApp, *, max_body: int, hsts: bool) -> None:
        self.app = app
        self.max_body = max_body
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        extra = list(SECURITY_HEADERS)
        if not path.startswith(CSP_EXEMPT):
            extra.append((b"content-security-policy", CSP))
        if self.hsts:
            extra.append((b"strict-transport-security", b"max-age=31536000"))

        exempt = (scope.get("method"), path) in BODY_LIMIT_EXEMPT
        max_body = 1 << 62 if exempt else self.max_body
        length = _content_length(scope)
        if length is not None and length > max_body:
            await _send_413(send, extra)
            return
        received = 0
        too_large = started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    too_large = True
                    raise _TooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            # Frameworks may turn the receive error into their own 400: answer 413.
            if too_large and not started:
                if message["type"] == "http.response.start":
                    started = True
                    await _send_413(send, extra)
                return
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _TooLarge:
            if not started:
                await _send_413(send, extra)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket ends (close code 1008) when its access token expires ("expired":
        the client refreshes its token and reconnects) or when its principal loses its
        right ("revoked": see SocketGuard)."""
        app_state = getattr(scope.get("app"), "state", None)
        sec: SecurityContext | None = getattr(app_state, "security", None)
        api = getattr(app_state, "iotp", None)
        if sec is None or api is None:  # no lifespan (tests of the bare app)
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # authorize leaves the principal there
        watched = sec.sockets.watch(scope, api.sessions)
        closed = False

        async def close(reason: str) -> Message:
            nonlocal closed
            if not closed:
                closed = True
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return {"type": "websocket.disconnect", "code": 1008}

        async def guarded_receive() -> Message:
            if watched.revoked.is_set():
                return await close("revoked")
            # authorize leaves the principal there during the handshake, from a token it
            # has verified, whether it came as ?token= or in a header.
            principal = scope["state"].get("principal")
            deadline = principal.expires_at if isinstance(principal, Principal) else None
            timeout = None if deadline is None else max(deadline - time.time(), 0)
            incoming = asyncio.ensure_future(receive())
            cut = asyncio.ensure_future(watched.revoked.wait())
            try:
                await asyncio.wait(
                    (incoming, cut), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                cut.cancel()
                if not incoming.done():
                    incoming.cancel()
            if incoming.done() and not incoming.cancelled():
                return incoming.result()
            return await close("revoked" if watched.revoked.is_set() else "expired")

        async def guarded_send(message: Message) -> None:
            if not closed:
                await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        finally:
            sec.sockets.unwatch(watched)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, headers: list[tuple[bytes, bytes]]) -> None:
    body = b'{"detail":"request body too large"}'
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _out_of_range(request: Any, exc: Exception) -> JSONResponse:
    """A number the database cannot hold (an id like 2**70 in a path, found by the
    fuzzer on every route with an integer id): the client's mistake, not a server error."""
    log.info("value out of range on %s: %s", request.url.path, type(exc).__name__)
    return JSONResponse({"detail": "a number is out of range"}, status_code=422)


def _document_security(app: Any) -> None:
    """Security schemes in the OpenAPI schema: the "Authorize" button of /docs, and
    clients generated from the schema know which operations are public."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            schema: dict[str, Any] = app.openapi_schema
            return schema
        schema = build()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["OAuth2PasswordBearer"] = {
            "type": "oauth2",
            "flows": {"password": {"tokenUrl": "/api/auth/token", "scopes": {}}},
        }
        schemes["APIKeyHeader"] = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        schema["security"] = [{"OAuth2PasswordBearer": []}, {"APIKeyHeader": []}]
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if isinstance(operation, dict) and path.startswith("/api"):
                    declared = operation.get(ROLE_KEY)
                    role = required_role(path, method.upper(), declared)
                    if role is None:
                        operation["security"] = []
        return schema

    app.openapi = openapi


def install(app: Any, settings: Settings) -> None:
    """Middleware for app: CORS (from IOTP_CORS_ORIGINS) and hardening."""
    from fastapi.middleware.cors import CORSMiddleware

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
            allow_credentials=False,
        )
    _document_security(app)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(DataError, _out_of_range)
    app.add_middleware(
        HardeningMiddleware,
        max_body=settings.max_request_bytes,
        hsts=settings.tls_cert_file is not None,
    )


async def startup(app: Any, state: Any) -> None:
    """In the API lifespan: the signing key, and on first start the `admin` user (its
    password from IOTP_ADMIN_PASSWORD, or generated and printed once)."""
    settings: Settings = state.settings
    app.state.security = SecurityContext(settings)
    async with state.sessions() as session:
        try:
            generated = await user_service.ensure_admin(
                session, password=settings.admin_password.get_secret_value()
            )
        except InvalidRequestError as exc:
            raise ConfigurationError(f"IOTP_ADMIN_PASSWORD: {exc}") from None
    if generated:
        line = f"Created user 'admin' with password: {generated}"
        hint = "(shown once: change it with `iotp user set-password admin`)"
        bar = "*" * (max(len(line), len(hint)) + 4)
        print(f"\n{bar}\n  {line}\n  {hint}\n{bar}\n", flush=True)
        log.warning("created user 'admin' with a generated password (printed on stdout)")


def uvicorn_tls(settings: Settings) -> dict[str, Any]:
    """HTTPS for the API when IOTP_TLS_CERT_FILE and IOTP_TLS_KEY_FILE are set."""
    if settings.tls_cert_file and settings.tls_key_file:
        return {
            "ssl_certfile": str(settings.tls_cert_file),
            "ssl_keyfile": str(settings.tls_key_file),
        }
    return {}


def uvicorn_proxy(settings: Settings) -> dict[str, Any]:
    """Which proxies' X-Forwarded-For the API believes: the address sign-in throttling
    counts is the client's, not the proxy's."""
    return {"proxy_headers": True, "forwarded_allow_ips": settings.forwarded_allow_ips}


def security_banner(settings: Settings, broker: Any) -> list[str]:
    """Lines for the `iotp serve` banner (the mode's own lines: runtime.mode_lines)."""
    lines = []
    tls_url = getattr(broker, "tls_url", None)
    if tls_url:
        lines.append(f"MQTTS:      {tls_url}")
    return lines

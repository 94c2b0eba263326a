"""Sending one webhook request: the private-address guard at send time (a name may
resolve anywhere), the signed body, a bounded timeout, no redirects."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from iotp import __version__
from iotp.services import webhooks as webhook_service
from iotp.services.webhooks import Outcome

USER_AGENT = f"iotp-webhooks/{__version__}"


async def resolves_private(url: str) -> str | None:
    """The first private address the URL's host resolves to, or None."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for info in infos:
        address = str(info[4][0])
        if webhook_service.is_private(address):
            return address
    return None


def request_parts(secret: str, body: dict[str, Any], now: float) -> tuple[bytes, dict[str, str]]:
    raw = orjson.dumps(body)
    timestamp = int(now)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-IoTP-Event": str(body.get("type")),
        "X-IoTP-Delivery": str(body.get("id")),
        "X-IoTP-Timestamp": str(timestamp),
        webhook_service.SIGNATURE_HEADER: webhook_service.signature_header(secret, timestamp, raw),
    }
    return raw, headers


async def send(
    client: httpx.AsyncClient,
    *,
    url: str,
    secret: str,
    body: dict[str, Any],
    request_timeout: float,
    allow_private: bool,
) -> Outcome:
    started = time.perf_counter()
    try:
        if not allow_private:
            private = await resolves_private(url)
            if private is not None:
                return Outcome(False, None, f"target resolves to private address {private}", 0.0)
        raw, headers = request_parts(secret, body, time.time())
        response = await client.post(
            url, content=raw, headers=headers, timeout=request_timeout, follow_redirects=False
        )
    except (httpx.HTTPError, OSError) as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500], elapsed)
    elapsed = (time.perf_counter() - started) * 1000
    ok = 200 <= response.status_code < 300
    error = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
    return Outcome(ok, response.status_code, error, elapsed)

"""Sending one webhook request: the private-address guard at send time (a name may
resolve anywhere), the connection pinned to the address that was checked, the signed
body, a bounded timeout, no redirects.

The host name is resolved once. The request then goes to that address, with the name
kept in the Host header and, for https, in the TLS SNI (so the certificate is checked
against the name). A name that answers a public address to the check and a private one
to the connection (DNS rebinding) therefore cannot reach the private one."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson

from iotp import __version__
from iotp.services import webhooks as webhook_service
from iotp.services.webhooks import Outcome

USER_AGENT = f"iotp-webhooks/{__version__}"


Resolver = Callable[[str, int], Awaitable[list[str]]]


class PrivateTarget(Exception):
    """The target resolves to a private address (and those are not allowed)."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def pinned_target(
    url: str, *, allow_private: bool, resolver: Resolver
) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """The URL with its host replaced by the checked address, the Host header and the
    request extensions (SNI) that keep the name. Raises PrivateTarget."""
    parsed = httpx.URL(url)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        addresses = await resolver(host, port)
    if not addresses:
        raise OSError(f"{host} does not resolve")
    if not allow_private:
        private = next((a for a in addresses if webhook_service.is_private(a)), None)
        if private is not None:
            raise PrivateTarget(f"target resolves to private address {private}")
    address = addresses[0]
    headers = {"Host": parsed.netloc.decode("ascii")}
    extensions: dict[str, Any] = {"sni_hostname": host} if parsed.scheme == "https" else {}
    return parsed.copy_with(host=address), headers, extensions


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
    resolver: Resolver = system_resolver,
) -> Outcome:
    started = time.perf_counter()
    try:
        target, host, extensions = await pinned_target(
            url, allow_private=allow_private, resolver=resolver
        )
        raw, headers = request_parts(secret, body, time.time())
        response = await client.post(
            target,
            content=raw,
            headers={**headers, **host},
            timeout=request_timeout,
            follow_redirects=False,
            extensions=extensions,
        )
    except PrivateTarget as exc:
        return Outcome(False, None, str(exc), 0.0)
    except (httpx.HTTPError, OSError) as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500], elapsed)
    elapsed = (time.perf_counter() - started) * 1000
    ok = 200 <= response.status_code < 300
    error = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
    return Outcome(ok, response.status_code, error, elapsed)

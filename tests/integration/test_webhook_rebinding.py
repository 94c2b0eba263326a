"""Webhook SSRF by DNS rebinding, against a real HTTP receiver on loopback (no devices):
a name that answers a public address to the check and a private one to the connection;
and by redirect: a target that answers 302 towards another address."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from iotp.netutil import free_port
from iotp.services import webhook_delivery as delivery


class Receiver:
    """A minimal HTTP server on 127.0.0.1 that records each request's head."""

    OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    def __init__(self, answer: bytes = OK) -> None:
        self.answer = answer
        self.port = free_port()
        self.heads: list[str] = []
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        length = next(
            (
                int(line.split(":", 1)[1])
                for line in head.split("\r\n")
                if line.lower().startswith("content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        self.heads.append(head)
        writer.write(self.answer)
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def rebinding_resolver() -> delivery.Resolver:
    """First a public address (TEST-NET-3, unreachable), then loopback."""
    answers = [["203.0.113.7"], ["127.0.0.1"]]

    async def resolve(host: str, port: int) -> list[str]:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return resolve


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


async def send(url: str, resolver: delivery.Resolver, *, allow_private: bool) -> delivery.Outcome:
    async with httpx.AsyncClient() as client:
        return await delivery.send(
            client,
            url=url,
            secret="whsec_test",
            body={"type": "test", "id": "1"},
            request_timeout=1.0,
            allow_private=allow_private,
            resolver=resolver,
        )


async def test_a_rebinding_name_cannot_reach_a_private_address(receiver: Receiver) -> None:
    url = f"http://hook.example:{receiver.port}/in"
    outcome = await send(url, rebinding_resolver(), allow_private=False)
    assert not outcome.ok
    assert receiver.heads == []  # the connection went to the address that was checked


async def test_the_pinned_request_keeps_the_name_in_its_host_header(receiver: Receiver) -> None:
    async def loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    url = f"http://hook.example:{receiver.port}/in"
    refused = await send(url, loopback, allow_private=False)
    assert refused.error == "target resolves to private address 127.0.0.1"
    outcome = await send(url, loopback, allow_private=True)
    assert outcome.ok
    assert f"host: hook.example:{receiver.port}" in receiver.heads[0].lower()


async def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    """A target that redirects elsewhere (an internal address, after its own check
    passed) gets its 302 recorded as a failure; the other address sees nothing."""

    async def loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    redirect = (
        f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{receiver.port}/internal\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()
    async with Receiver(redirect) as target:
        # allow_private lets the test's target on loopback be reached at all: what is
        # tested is that its answer sends the request nowhere else.
        outcome = await send(f"http://hook.example:{target.port}/in", loopback, allow_private=True)
    assert len(target.heads) == 1
    assert not outcome.ok
    assert outcome.status_code == 302
    assert receiver.heads == []

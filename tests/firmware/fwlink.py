"""Helpers for the firmware's link tests: brokers on free ports, a TCP proxy that can
cut or black-hole a connection, and a way to load firmware modules."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker

from iotp.netutil import free_port
from iotp.simulator import firmware
from tests.support import MosquittoServer, MqttTestClient, eventually, start_mosquitto

BROKERS = ["amqtt", "mosquitto"]


def fw(name: str) -> Any:
    return firmware.module(name)


@dataclass
class BrokerUnderTest:
    kind: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def observer(self) -> MqttTestClient:
        return await MqttTestClient(self.url).connect()


@contextlib.asynccontextmanager
async def run_broker(kind: str) -> AsyncIterator[BrokerUnderTest]:
    if kind == "amqtt":
        port = free_port()
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
                },
            }
        )
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        await broker.start()
        try:
            yield BrokerUnderTest("amqtt", "127.0.0.1", port)
        finally:
            await broker.shutdown()
    else:
        server: MosquittoServer = start_mosquitto()
        try:
            yield BrokerUnderTest("mosquitto", "127.0.0.1", server.port)
        finally:
            server.stop()


async def next_message(
    client: MqttTestClient, topic: str, timeout: float = 5.0, match: Any = None
) -> bytes:
    """The oldest not yet taken message on `topic` (whose payload satisfies `match`, if
    given). Messages it passes over stay available for later calls."""
    backlog: list[tuple[str, bytes]] = client.__dict__.setdefault("backlog", [])
    for i, (got_topic, payload) in enumerate(backlog):
        if got_topic == topic and (match is None or match(payload)):
            del backlog[i]
            return payload
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError(f"no message on {topic}")
        try:
            got_topic, payload = await asyncio.wait_for(client.messages.get(), left)
        except TimeoutError:
            raise TimeoutError(f"no message on {topic}") from None
        if got_topic == topic and (match is None or match(payload)):
            return payload
        backlog.append((got_topic, payload))


async def listening(observer: MqttTestClient, node_id: str) -> None:
    """Returns once the device's "online" birth message has reached ``observer``
    (subscribed to the device's topics; the message is retained, so one that came before
    counts). On each connection the firmware sends its SUBSCRIBE before its birth
    messages, and a broker handles one connection's packets in order: from now on the
    device receives its commands. The message stays for later next_message calls."""
    topic = f"devices/{node_id}/status"
    payload = await next_message(observer, topic, match=lambda p: p == b"online")
    observer.__dict__.setdefault("backlog", []).insert(0, (topic, payload))


async def wait_until(probe: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    """:func:`tests.support.eventually`, with the link tests' shorter timeout."""
    await eventually(probe, timeout=timeout, interval=interval)


class TcpProxy:
    """Forwards 127.0.0.1:port to a broker. `cut()` drops every connection;
    `blackhole = True` swallows what the broker sends (so PUBACKs get lost);
    `refuse = True` closes new connections at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.blackhole = False
        self.refuse = False
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse:
            writer.close()
            await writer.wait_closed()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            await writer.wait_closed()
            return
        self._writers += [writer, up_writer]
        down = asyncio.create_task(self._pump(up_reader, writer, downstream=True))
        up = asyncio.create_task(self._pump(reader, up_writer, downstream=False))
        self._tasks |= {down, up}
        await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        for task in (down, up):
            task.cancel()
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, downstream: bool
    ) -> None:
        while True:
            data = await reader.read(4096)
            if not data:
                return
            if downstream and self.blackhole:
                continue
            writer.write(data)
            await writer.drain()

    def cut(self) -> None:
        for w in self._writers:
            w.transport.abort()
        self._writers = []

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_fleet(url: str, devices: int = 1, **kwargs: Any) -> AsyncIterator[Any]:
    """A simulator fleet that is online for the body of the `async with`."""
    from iotp.simulator import Fleet

    kwargs.setdefault("connect_rate", 1000.0)
    kwargs.setdefault("gas_events_per_hour", 0.0)
    fleet = Fleet(devices=devices, broker_url=url, **kwargs)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(fleet.run(stop=stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        yield fleet
    finally:
        stop.set()
        await task


class Commander:
    """Sends commands to one device and collects its acks."""

    def __init__(self, client: MqttTestClient, node_id: str) -> None:
        self.client = client
        self.node_id = node_id
        self.n = 0

    def topic(self, leaf: str) -> str:
        return f"devices/{self.node_id}/{leaf}"

    async def send_raw(self, payload: bytes) -> dict[str, Any]:
        self.client.publish(self.topic("commands"), payload, qos=1)
        raw = await next_message(self.client, self.topic("ack"))
        ack: dict[str, Any] = json.loads(raw)
        return ack

    async def send(
        self, command: str, params: Any = None, *, final: bool = True, timeout: float = 5.0
    ) -> dict[str, Any]:
        self.n += 1
        cid = f"cmd-{self.n}"
        body = {"id": cid, "command": command, "params": {} if params is None else params}
        self.client.publish(self.topic("commands"), json.dumps(body), qos=1)
        while True:
            raw = await next_message(
                self.client,
                self.topic("ack"),
                timeout=timeout,
                match=lambda p: json.loads(p)["id"] == cid,
            )
            ack: dict[str, Any] = json.loads(raw)
            if not final or ack["status"] != "progress":
                return ack

    async def send_next(self, cid: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next ack (progress or final) for command `cid`."""
        raw = await next_message(
            self.client,
            self.topic("ack"),
            timeout=timeout,
            match=lambda p: json.loads(p)["id"] == cid,
        )
        ack: dict[str, Any] = json.loads(raw)
        return ack

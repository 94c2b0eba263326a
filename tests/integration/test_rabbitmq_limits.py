"""RabbitMQ 3.10 (the node the tests run, configured by .ci/rabbitmq) refuses an MQTT
PUBLISH over the platform's packet limit: nothing is routed and the publisher's
connection is closed, while other clients go on. The attacker holds valid credentials
(the vhost's user): anonymous MQTT is off on every broker the platform ships."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator

import pytest

from iotp.settings import DEFAULT_MAX_PACKET_BYTES
from tests.support import (
    ROOT,
    RabbitVhost,
    create_rabbitmq_vhost,
    delete_rabbitmq_vhost,
    ensure_rabbitmq,
)


@pytest.fixture
async def vhost() -> AsyncIterator[RabbitVhost]:
    ensure_rabbitmq()
    # the script is idempotent: it applies the limit to a node started before it had it
    subprocess.run([str(ROOT / ".ci" / "rabbitmq")], check=True, capture_output=True, timeout=240)
    vh = await create_rabbitmq_vhost("iotp_limits")
    try:
        yield vh
    finally:
        await delete_rabbitmq_vhost(vh)


async def test_an_oversized_publish_is_not_routed_and_others_go_on(vhost: RabbitVhost) -> None:
    watcher = await vhost.device("limits-watcher")
    await watcher.subscribe("devices/#")
    attacker = await vhost.device("limits-attacker")
    attacker.publish("devices/A1/data", b"x" * (DEFAULT_MAX_PACKET_BYTES + 1))
    device = await vhost.device("limits-device")
    device.publish("devices/A2/data", b'{"t": 1}')
    topic, payload = (await asyncio.wait_for(watcher.messages.get(), 10))[:2]
    assert (topic, payload) == ("devices/A2/data", b'{"t": 1}')  # nothing before it
    await asyncio.sleep(1)  # bounded: the oversized message, had it been routed, is here
    assert watcher.messages.empty()
    for client in (watcher, attacker, device):
        await client.close()

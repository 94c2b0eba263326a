"""Secure mode end to end: worker and provisioner on their service account, a device
that provisions itself (auto-approval), sends data that is stored; forged data is not;
MQTT over TLS with the device pinning the platform's CA; the API over HTTPS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import gmqtt
import orjson
from gmqtt.mqtt.constants import MQTTv311

from iotp.broker.embedded import EmbeddedBroker
from iotp.netutil import free_port
from iotp.runtime import Platform
from tests.integration.test_broker_acl import FLEET, embedded
from tests.support import AMQTT_KIND, PROVISIONED, eventually, need, run_stack


async def test_secure_stack_provision_then_data(tmp_path: Path) -> None:
    async with (
        embedded(tmp_path, auto_approve=True, batch_max_delay_ms=20) as b,
        # The worker and the provisioner, as `iotp worker` runs them on this broker.
        Platform(b.settings, broker=None, mqtt_url=b.url, api_port=None) as platform,
    ):
        worker = platform.worker
        prov = await b.connect("E5", "provision", FLEET)
        await prov.subscribe("provision/E5/response")
        secret = "e5-made-this-secret-up-0123456789"
        prov.publish("provision/E5/request", orjson.dumps({"secret": secret}))
        assert orjson.loads((await prov.next())[1]) == {"status": "approved"}
        await prov.close()
        dev = await b.connect("E5", "E5", secret)
        dev.publish("devices/F6/data", '{"forged": 1}')
        dev.publish("devices/E5/data", '{"temperature": 21.5, "seq": 1}')
        counters = worker.ingestor.counters
        await eventually(lambda: counters.stored >= 1, timeout=10, what="E5's data stored")
        assert counters.stored == 1
        assert worker.ingestor.known == {"E5"}  # F6 never reached the platform


def _make_ca_and_cert(d: Path) -> tuple[Path, Path, Path]:
    need(shutil.which("openssl") is not None, "openssl")
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt"))
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=iotp test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        str(cert),
        "-extfile",
        str(ext),
    )
    return ca, cert, key


async def test_mqtts_with_pinned_ca_and_https_api(tmp_path: Path) -> None:
    ca, cert, key = _make_ca_and_cert(tmp_path)
    async with run_stack(
        AMQTT_KIND,
        tmp_path,
        mode=PROVISIONED,
        ca_file=ca,
        provisioning_secret=FLEET,
        tls_cert_file=cert,
        tls_key_file=key,
        mqtt_tls_port=free_port(),
    ) as stack:
        settings, broker = stack.settings, stack.broker
        assert isinstance(broker, EmbeddedBroker)
        assert broker.tls_url == f"mqtts://127.0.0.1:{settings.mqtt_tls_port}"
        pinned = ssl.create_default_context(cafile=str(ca))  # only our CA is trusted
        client = gmqtt.Client("svc-tls")
        client.set_auth_credentials(
            settings.mqtt_service_account("worker"), settings.mqtt_service_password("worker")
        )
        await client.connect("127.0.0.1", settings.mqtt_tls_port, ssl=pinned, version=MQTTv311)
        assert client.is_connected
        await client.disconnect()
        # A client that trusts only the public CAs refuses the platform's certificate.
        stranger = gmqtt.Client("svc-tls-2")
        stranger.set_config({"reconnect_retries": 0})
        try:
            await asyncio.wait_for(
                stranger.connect(
                    "127.0.0.1", settings.mqtt_tls_port, ssl=ssl.create_default_context()
                ),
                5,
            )
            raise AssertionError("connected without trusting the CA")
        except ssl.SSLError:
            pass

        # The API over HTTPS with the same certificate (Stack.http trusts only our CA).
        assert stack.api_url.startswith("https://")
        r = await stack.http.get("/api/health")
        assert "strict-transport-security" in r.headers

"""The Wi-Fi provisioning captive portal, served by the firmware on CPython."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from iotp.netutil import free_port
from iotp.simulator.hal import Physics, SimHal
from tests.firmware.fwlink import fw, wait_until


def unprovisioned_hal() -> SimHal:
    rng = random.Random(1)
    hal = SimHal(
        mac=bytes.fromhex("02AABBCCDDEE"), rng=rng, physics=Physics(rng=rng), ip="198.51.100.9"
    )
    hal.portal_port = free_port()
    return hal


async def test_portal_page_form_and_saved_config() -> None:
    hal = unprovisioned_hal()
    device = fw("device").Device(hal)
    run = asyncio.create_task(device.run())
    base = f"http://127.0.0.1:{hal.portal_port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            await wait_until(lambda: _listening(hal.portal_port), timeout=5)
            page = await http.get("/")
            assert page.status_code == 200
            assert "IoT Platform setup" in page.text
            assert '<option value="SimNet"' in page.text  # the network list
            assert "02AABBCCDDEE" in page.text
            for name in (
                "password",
                "mqtt_host",
                "mqtt_port",
                "mqtt_user",
                "mqtt_password",
                "name",
            ):
                assert f'name="{name}"' in page.text
            # phones probe a known URL: they are sent to the portal
            probe = await http.get("/generate_204")
            assert probe.status_code == 302
            assert probe.headers["location"] == "http://192.168.4.1/"
            # a form without a broker is refused and nothing is stored
            bad = await http.post("/save", data={"ssid": "SimNet", "password": "pw"})
            assert bad.status_code == 400
            assert "MQTT broker host" in bad.text
            assert "config.json" not in hal.files
            saved = await http.post(
                "/save",
                data={
                    "ssid": "",
                    "ssid_manual": "Home & Garden",
                    "password": "pässword",
                    "mqtt_host": "broker.example",
                    "mqtt_port": "1884",
                    "mqtt_user": "dev",
                    "mqtt_password": "x=y",
                    "name": "Kitchen",
                },
            )
            assert saved.status_code == 200
            assert "Home &amp; Garden" in saved.text
        reason = await asyncio.wait_for(run, 5)
        assert reason == "provisioned"
        assert hal.resets == 1
        cfg = json.loads(hal.files["config.json"])
        assert cfg["wifi_ssid"] == "Home & Garden"
        assert cfg["wifi_password"] == "pässword"
        assert cfg["mqtt_host"] == "broker.example"
        assert cfg["mqtt_port"] == 1884
        assert cfg["mqtt_user"] == "dev"
        assert cfg["mqtt_password"] == "x=y"
        assert cfg["name"] == "Kitchen"
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_form_parsing_and_dns_answer() -> None:
    portal = fw("portal")
    form = portal.parse_form(b"a=1&b=x+y%26z&c=%C3%A9&d")
    assert form == {"a": "1", "b": "x y&z", "c": "é", "d": ""}
    query = bytes.fromhex("abcd01000001000000000000") + b"\x07example\x03com\x00\x00\x01\x00\x01"
    reply = portal.dns_response(query, "192.168.4.1")
    assert reply[:2] == b"\xab\xcd"
    assert reply.endswith(bytes([192, 168, 4, 1]))
    assert portal.dns_response(b"\x00" * 5, "192.168.4.1") is None


def test_portal_form_takes_tls_ca_and_fleet_secret() -> None:
    portal = fw("portal")
    settings = fw("settings")
    ca = fw("tls").PEM_BEGIN + "\n" + _TEST_CA_BODY + "\n" + fw("tls").PEM_END
    form = {
        "ssid": "SimNet",
        "mqtt_host": "iot.example",
        "mqtt_port": "",
        "mqtt_tls": "on",
        "mqtt_ca": ca.replace("\n", "\r\n"),
        "fleet_secret": " fleet-secret-0123456789 ",
    }
    updates = portal.form_to_config(form)
    assert updates["mqtt_tls"] is True
    assert updates["mqtt_port"] == 8883  # the TLS default
    assert updates["mqtt_ca"] == ca + "\n"
    assert updates["fleet_secret"] == "fleet-secret-0123456789"
    # an empty fleet secret field keeps the stored one; no TLS means port 1883
    updates = portal.form_to_config({"ssid": "SimNet", "mqtt_host": "iot.example"})
    assert "fleet_secret" not in updates
    assert updates["mqtt_tls"] is False
    assert updates["mqtt_port"] == 1883
    with pytest.raises(settings.ConfigError, match="mqtt_ca"):
        portal.form_to_config(dict(form, mqtt_ca="not a certificate"))
    page = portal.render_page([], {"mqtt_tls": True, "mqtt_ca": ca}, "02AABBCCDDEE")
    for name in ("mqtt_tls", "mqtt_ca", "fleet_secret"):
        assert f'name="{name}"' in page
    assert " checked" in page


# A self-signed test CA (EC P-256), made for these tests only.
_TEST_CA_BODY = """\
MIIBgzCCASmgAwIBAgIUEtb9pJbbYehULykHLlWDUXzUaUAwCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMaW90cCB0ZXN0IENBMB4XDTI2MTEyNzIwNDg0NloXDTM2MTEy
NDIwNDg0NlowFzEVMBMGA1UEAwwMaW90cCB0ZXN0IENBMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAErbeZM7l3HI1oQh0/30u3v0YPLIRF5dwKtbOC0k3UV3bY0ZHH
gg3v3AIDR692Jm35PsqPML/haBzlvimWFUNzEaNTMFEwHQYDVR0OBBYEFLCJnvbY
7TdtMfy5VOwMXUOR6da9MB8GA1UdIwQYMBaAFLCJnvbY7TdtMfy5VOwMXUOR6da9
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhANbQEztV8ciN1cj9
xzcJMYlHfQMbnNnEwyEZWkrzXW/OAiBdbsRE3pWxQqpwpLK332Ptz+HOi+UAFKYr
lkFauLH4NQ=="""


async def test_portal_shows_the_fingerprint_the_platform_will_show() -> None:
    """Saving a fleet secret makes the device's provisioning secret at once, so the
    saved page (and the setup page from then on) shows its fingerprint: the admin
    approves only the pending request with the same one."""
    from iotp.services.credentials import fingerprint

    hal = unprovisioned_hal()
    device = fw("device").Device(hal)
    run = asyncio.create_task(device.run())
    base = f"http://127.0.0.1:{hal.portal_port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            await wait_until(lambda: _listening(hal.portal_port), timeout=5)
            assert "fingerprint" not in (await http.get("/")).text.lower()
            saved = await http.post(
                "/save",
                data={"ssid": "SimNet", "mqtt_host": "broker.example", "fleet_secret": "f" * 24},
            )
            assert saved.status_code == 200
        await asyncio.wait_for(run, 5)
        cfg = json.loads(hal.files["config.json"])
        secret = cfg["provision_secret"]
        assert len(secret) >= 16
        assert fingerprint(secret) in saved.text
        page = fw("portal").render_page([], cfg, "02AABBCCDDEE")
        assert fingerprint(secret) in page
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)

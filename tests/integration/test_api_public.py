"""What the API shows to anyone who asks, on a real stack (devices in open mode: none
take part): no internals in the public health answer, a readable landing page, the broker
address devices use."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from iotp.api import app as app_module
from iotp.db.engine import make_engine
from tests.support import OPEN, run_stack


async def test_public_health_tells_no_database_internals(tmp_path: Path) -> None:
    async with run_stack("embedded-sqlite", tmp_path, mode=OPEN) as stack:
        engine = make_engine(stack.settings.effective_database_url)
        async with engine.begin() as conn:  # a broken database: a table gone
            await conn.execute(text("ALTER TABLE component_stats RENAME TO hidden_stats"))
        await engine.dispose()
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as anyone:
            r = await anyone.get("/api/health")
        assert r.status_code == 503
        assert r.json()["database"] == "error"
        for secret in ("component_stats", "sqlite", "OperationalError", str(tmp_path)):
            assert secret not in r.text


async def test_the_landing_page_without_a_built_dashboard_is_a_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "web_dist", lambda: None)  # as on a fresh checkout
    async with (
        run_stack("embedded-sqlite", tmp_path, mode=OPEN) as stack,
        httpx.AsyncClient(base_url=stack.api_url, timeout=10) as anyone,
    ):
        r = await anyone.get("/")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "make web" in r.text
        assert (await anyone.get("/api/devices")).status_code == 401


async def test_info_tells_devices_their_listener_not_the_platforms(tmp_path: Path) -> None:
    async with run_stack("embedded-sqlite", tmp_path, mode=OPEN) as stack:
        info = await stack.get("/api/info")
    device_port = int(stack.mqtt_url.rsplit(":", 1)[1])
    assert info["mqtt"] == {"host": None, "port": device_port, "tls": False}

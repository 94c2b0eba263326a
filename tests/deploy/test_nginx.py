"""deploy/nginx/default.conf run by Debian's nginx in front of a real stack (devices in
open mode: none take part): the API counts sign-in attempts per client address behind
the proxy, and the dashboard is served with its security headers.

Adapted to run here: the upstream points at the test API instead of compose's `api`
service, and `resolver`/`resolve` (Docker's DNS; `resolve` needs nginx >= 1.27.3) are
left out."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from iotp.netutil import free_port
from tests.support import OPEN, TEST_ADMIN_PASSWORD, Stack, need, run_stack

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MAX_FAILURES = 3

MAIN_CONF = """\
daemon off;
master_process off;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/default.conf;
}}
"""


def adapted_site(api_port: int, port: int, root: Path) -> str:
    conf = (DEPLOY / "nginx" / "default.conf").read_text()
    conf = re.sub(r"(?m)^resolver .*$", "", conf)
    conf = conf.replace("server api:8000 resolve;", f"server 127.0.0.1:{api_port};")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("root /usr/share/nginx/html;", f"root {root};")
    assert f"127.0.0.1:{api_port}" in conf
    assert f"listen 127.0.0.1:{port}" in conf
    return conf


@dataclass
class Proxied:
    stack: Stack
    url: str

    def client(self, address: str) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=address)
        return httpx.AsyncClient(base_url=self.url, timeout=30, transport=transport)


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[Proxied]:
    need(Path(NGINX).exists(), "nginx binary (Debian package nginx)")
    async with run_stack(
        "embedded-sqlite",
        tmp_path,
        mode=OPEN,
        login_max_failures=MAX_FAILURES,
        forwarded_allow_ips="127.0.0.1",
    ) as stack:
        web = tmp_path / "html"
        (web / "assets").mkdir(parents=True)
        (web / "index.html").write_text("<!doctype html><title>IoT Platform</title>")
        (web / "assets" / "app.js").write_text("console.log('dashboard')")
        conf_dir = tmp_path / "nginx"
        conf_dir.mkdir()
        port = free_port()
        api_port = int(stack.api_url.rsplit(":", 1)[1])
        (conf_dir / "default.conf").write_text(adapted_site(api_port, port, web))
        (conf_dir / "nginx.conf").write_text(MAIN_CONF.format(dir=conf_dir))
        check = subprocess.run(
            [NGINX, "-t", "-c", str(conf_dir / "nginx.conf")], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen([NGINX, "-c", str(conf_dir / "nginx.conf")])
        try:
            proxied = Proxied(stack, f"http://127.0.0.1:{port}")
            async with proxied.client("127.0.0.1") as http:

                async def up() -> bool:
                    try:
                        return (await http.get("/api/health")).status_code == 200
                    except httpx.TransportError:
                        return False

                await stack.wait_for(up)
            yield proxied
        finally:
            proc.terminate()
            proc.wait(10)


async def sign_in(http: httpx.AsyncClient, password: str, **headers: str) -> int:
    r = await http.post(
        "/api/auth/token", data={"username": "admin", "password": password}, headers=headers
    )
    return r.status_code


async def test_behind_nginx_an_attacker_is_stopped_and_the_admin_is_not(proxied: Proxied) -> None:
    async with proxied.client("127.0.0.2") as evil, proxied.client("127.0.0.3") as good:
        # A forged X-Forwarded-For does not make the attacker someone else: nginx appends
        # the real peer, and the API takes the last address its trusted proxy saw.
        codes = [
            await sign_in(evil, f"wrong-{i}", **{"X-Forwarded-For": f"10.9.8.{i}"})
            for i in range(MAX_FAILURES + 3)
        ]
        assert codes == [401] * MAX_FAILURES + [429] * 3
        assert await sign_in(good, TEST_ADMIN_PASSWORD) == 200


async def test_the_dashboard_carries_its_security_headers(proxied: Proxied) -> None:
    async with proxied.client("127.0.0.1") as http:
        for path in ("/", "/devices/A1", "/assets/app.js"):
            r = await http.get(path)
            assert r.status_code == 200, path
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
            assert r.headers["x-frame-options"] == "DENY", path
            assert r.headers["x-content-type-options"] == "nosniff", path
        assert "immutable" in (await http.get("/assets/app.js")).headers["cache-control"]
        assert (await http.get("/")).headers["cache-control"] == "no-cache"
        # The API's answers keep the API's own headers, not a second copy.
        r = await http.get("/api/health")
        assert r.headers.get_list("x-frame-options") == ["DENY"]
        assert len(r.headers.get_list("content-security-policy")) == 1

from __future__ import annotations

from pathlib import Path

import httpx
from starlette.applications import Starlette

from iotp.api.app import SpaFiles


async def test_deep_links_get_index_html_but_api_and_missing_files_404(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html>app</html>")
    (tmp_path / "app.js").write_text("js")
    app = Starlette()
    app.mount("/", SpaFiles(directory=tmp_path, html=True))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ("/", "/devices/A4CF12B3C4D5", "/login"):
            r = await client.get(path)
            assert (r.status_code, r.text) == (200, "<html>app</html>"), path
        assert (await client.get("/app.js")).text == "js"
        assert (await client.get("/api/unknown")).status_code == 404
        assert (await client.get("/assets/missing.js")).status_code == 404

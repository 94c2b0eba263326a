"""web/openapi.json, from which the dashboard's typed client (web/src/api/schema.gen.ts) is
generated, is the API's schema as it is (regenerate: in web/, `npm run dump:api` then
`npm run gen:api`)."""

from __future__ import annotations

import json
from pathlib import Path

from iotp.api.app import create_app
from iotp.settings import Settings

WEB = Path(__file__).resolve().parents[2] / "web"


def test_the_dashboards_openapi_file_is_current(tmp_path: Path) -> None:
    # The lifespan never runs: building the schema touches no database or broker.
    schema = create_app(Settings(data_dir=tmp_path)).openapi()
    assert json.loads((WEB / "openapi.json").read_text()) == schema, (
        "web/openapi.json is stale: in web/, run `npm run dump:api` then `npm run gen:api`"
    )

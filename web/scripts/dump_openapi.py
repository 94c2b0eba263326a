"""Write the API's OpenAPI schema to a file without running a server.

Usage (from web/): ../.venv/bin/python scripts/dump_openapi.py openapi.json
The typed client (src/api/schema.gen.ts) is generated from that file by `npm run gen:api`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from iotp.api.app import create_app
from iotp.settings import Settings


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "openapi.json")
    with tempfile.TemporaryDirectory() as tmp:
        # The lifespan never runs: building the schema touches no database or broker.
        app = create_app(Settings(data_dir=Path(tmp)))
        schema = app.openapi()
    out.write_text(json.dumps(schema, indent=2, sort_keys=False) + "\n")
    print(f"wrote {out} ({len(schema.get('paths', {}))} paths)")


if __name__ == "__main__":
    main()

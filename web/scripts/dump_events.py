"""Write the contract's schema (iotp.protocol.schema: events, command parameters) to a file.

Usage (from web/): ../.venv/bin/python scripts/dump_events.py events.json
The dashboard's event types (src/live/events.gen.ts) are generated from that file by
`npm run gen:api`; tests/unit/test_protocol.py checks the file is current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from iotp.protocol.schema import schema_document


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "events.json")
    schema = schema_document()
    out.write_text(json.dumps(schema, indent=2) + "\n")
    print(f"wrote {out} ({len(schema['components']['schemas'])} schemas)")


if __name__ == "__main__":
    main()

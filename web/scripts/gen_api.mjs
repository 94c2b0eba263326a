// Generates src/api/schema.gen.ts from the checked-in openapi.json, which
// scripts/dump_openapi.py dumps from the FastAPI app (`npm run dump:api`).
// Fields with a server-side default stay optional in what the client sends.
import { execFileSync } from "node:child_process";

execFileSync(
  process.execPath,
  [
    "node_modules/openapi-typescript/bin/cli.js",
    "openapi.json",
    "--default-non-nullable=false",
    "-o",
    "src/api/schema.gen.ts",
  ],
  { stdio: "inherit" },
);

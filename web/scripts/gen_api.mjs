// Generates the dashboard's types from checked-in schemas:
// src/api/schema.gen.ts from openapi.json (the REST API; `npm run dump:api` dumps it from
// the FastAPI app) and src/live/events.gen.ts from events.json (the platform events of
// iotp.protocol.events; `npm run dump:events`).
// Fields with a server-side default stay optional in what the client sends.
import { execFileSync } from "node:child_process";

for (const [schema, out] of [
  ["openapi.json", "src/api/schema.gen.ts"],
  ["events.json", "src/live/events.gen.ts"],
]) {
  execFileSync(
    process.execPath,
    [
      "node_modules/openapi-typescript/bin/cli.js",
      schema,
      "--default-non-nullable=false",
      "-o",
      out,
    ],
    { stdio: "inherit" },
  );
}

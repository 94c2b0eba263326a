// The contract of endpoints that other issues are building (issue 4: commands, shadow,
// firmware, rollouts; issue 5: auth). gen_api.mjs adds a path or schema from here ONLY
// when the dumped openapi.json does not have it yet, so as soon as the backend lands,
// its real definitions win and `npm run typecheck` shows any difference.
// Delete an entry once the backend ships it.

const ref = (name) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema) => ({ content: { "application/json": { schema } } });
const ok = (schema) => ({ 200: { description: "OK", ...json(schema) } });
const pathParam = (name) => ({ name, in: "path", required: true, schema: { type: "string" } });
const obj = (properties, required = Object.keys(properties)) => ({
  type: "object",
  properties,
  required,
});
const str = { type: "string" };
const num = { type: "number" };
const int = { type: "integer" };
const bool = { type: "boolean" };
const nullable = (s) => ({ anyOf: [s, { type: "null" }] });
const time = { type: "string", format: "date-time" };
const anyObj = { type: "object", additionalProperties: true };
const list = (name) => obj({ data: { type: "array", items: ref(name) }, count: int });

export const schemas = {
  // ---- issue 5 -------------------------------------------------------------------
  Token: obj(
    { access_token: str, refresh_token: str, token_type: str, expires_in: num },
    ["access_token", "token_type"],
  ),
  UserMe: obj({ username: str, role: { type: "string", enum: ["admin", "operator", "viewer"] } }),
  // ---- issue 4 -------------------------------------------------------------------
  CommandCreate: obj(
    { command: str, params: anyObj, timeout: num, ttl: num },
    ["command"],
  ),
  CommandPublic: obj(
    {
      id: str,
      device_id: str,
      command: str,
      params: anyObj,
      status: {
        type: "string",
        enum: ["queued", "sent", "acked", "failed", "timed_out", "expired", "cancelled"],
      },
      created_at: time,
      sent_at: nullable(time),
      finished_at: nullable(time),
      result: nullable(anyObj),
      error: nullable(str),
    },
    ["id", "device_id", "command", "params", "status", "created_at"],
  ),
  CommandsPublic: list("CommandPublic"),
  ShadowPublic: obj(
    { desired: anyObj, reported: anyObj, delta: anyObj, in_sync: bool },
    ["desired", "reported", "delta", "in_sync"],
  ),
  FirmwarePublic: obj(
    { id: str, version: str, sha256: str, size: int, notes: str, created_at: time },
    ["id", "version", "sha256", "size", "created_at"],
  ),
  FirmwaresPublic: list("FirmwarePublic"),
  RolloutCreate: obj(
    {
      firmware_id: str,
      device_ids: { type: "array", items: str },
      device_type: str,
      tag: str,
      all: bool,
      rate_per_minute: num,
      failure_threshold: num,
    },
    ["firmware_id"],
  ),
  RolloutDevice: obj(
    {
      device_id: str,
      status: {
        type: "string",
        enum: ["pending", "sent", "downloading", "installed", "failed", "rolled_back", "skipped"],
      },
      percent: nullable(num),
      error: nullable(str),
      updated_at: nullable(time),
    },
    ["device_id", "status"],
  ),
  RolloutPublic: obj(
    {
      id: str,
      firmware_id: str,
      version: str,
      status: { type: "string", enum: ["running", "paused", "cancelled", "completed"] },
      created_at: time,
      counts: { type: "object", additionalProperties: int },
      devices: { type: "array", items: ref("RolloutDevice") },
    },
    ["id", "firmware_id", "version", "status", "created_at", "counts"],
  ),
  RolloutsPublic: list("RolloutPublic"),
};

const formBody = (properties, required) => ({
  required: true,
  content: { "application/x-www-form-urlencoded": { schema: obj(properties, required) } },
});

export const paths = {
  "/api/auth/token": {
    post: {
      summary: "Login (OAuth2 password flow) or refresh (grant_type=refresh_token)",
      requestBody: formBody(
        { grant_type: str, username: str, password: str, refresh_token: str },
        [],
      ),
      responses: ok(ref("Token")),
    },
  },
  "/api/auth/me": { get: { responses: ok(ref("UserMe")) } },
  "/api/devices/{device_id}/commands": {
    parameters: [pathParam("device_id")],
    get: {
      parameters: [{ name: "limit", in: "query", schema: int }],
      responses: ok(ref("CommandsPublic")),
    },
    post: {
      parameters: [{ name: "wait", in: "query", schema: bool }],
      requestBody: { required: true, ...json(ref("CommandCreate")) },
      responses: ok(ref("CommandPublic")),
    },
  },
  "/api/commands/{command_id}": {
    parameters: [pathParam("command_id")],
    get: { responses: ok(ref("CommandPublic")) },
    delete: { responses: { 204: { description: "cancelled" } } },
  },
  "/api/devices/{device_id}/shadow": {
    parameters: [pathParam("device_id")],
    get: { responses: ok(ref("ShadowPublic")) },
    patch: {
      requestBody: { required: true, ...json(anyObj) },
      responses: ok(ref("ShadowPublic")),
    },
  },
  "/api/firmware": {
    get: { responses: ok(ref("FirmwaresPublic")) },
    post: {
      requestBody: {
        required: true,
        content: {
          "multipart/form-data": {
            schema: obj({ file: { type: "string", format: "binary" }, version: str, notes: str }, [
              "file",
              "version",
            ]),
          },
        },
      },
      responses: ok(ref("FirmwarePublic")),
    },
  },
  "/api/firmware/{firmware_id}": {
    parameters: [pathParam("firmware_id")],
    delete: { responses: { 204: { description: "deleted" } } },
  },
  "/api/rollouts": {
    get: { responses: ok(ref("RolloutsPublic")) },
    post: {
      requestBody: { required: true, ...json(ref("RolloutCreate")) },
      responses: ok(ref("RolloutPublic")),
    },
  },
  "/api/rollouts/{rollout_id}": {
    parameters: [pathParam("rollout_id")],
    get: { responses: ok(ref("RolloutPublic")) },
  },
  ...Object.fromEntries(
    ["pause", "resume", "cancel"].map((action) => [
      `/api/rollouts/{rollout_id}/${action}`,
      { parameters: [pathParam("rollout_id")], post: { responses: ok(ref("RolloutPublic")) } },
    ]),
  ),
};

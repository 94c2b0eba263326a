import { api, quietIfMissing, unwrap, type components } from "../../api/client";
import { ApiError } from "../../api/errors";

export type Firmware = components["schemas"]["FirmwarePublic"];
export type Rollout = components["schemas"]["RolloutPublic"];
export type RolloutCreate = components["schemas"]["RolloutCreate"];

/** null: this server has no firmware API. */
export async function listFirmware(): Promise<Firmware[] | null> {
  try {
    return (await unwrap(api.GET("/api/firmware"), quietIfMissing)).data;
  } catch (exc) {
    if (exc instanceof ApiError && exc.routeMissing) return null;
    throw exc;
  }
}

export async function listRollouts(): Promise<Rollout[]> {
  return (await unwrap(api.GET("/api/rollouts"), quietIfMissing)).data;
}

export async function uploadFirmware(
  file: File,
  version: string | undefined,
  notes: string,
  deviceType?: string,
): Promise<Firmware> {
  // The bundle is the raw request body; version (optional: the bundle names it) and notes travel in the query.
  return unwrap(
    api.POST("/api/firmware", {
      params: { query: { ...(version ? { version } : {}), notes, ...(deviceType ? { device_type: deviceType } : {}) } },
      body: file as unknown as string,
      bodySerializer: (b) => b as unknown as Blob,
      headers: { "Content-Type": "application/octet-stream" },
    }),
  );
}

export async function deleteFirmware(id: number): Promise<void> {
  await unwrap(api.DELETE("/api/firmware/{firmware_id}", { params: { path: { firmware_id: id } } }));
}

export async function startRollout(body: RolloutCreate): Promise<Rollout> {
  return unwrap(api.POST("/api/rollouts", { body }));
}

export async function rolloutAction(id: number, action: "pause" | "resume" | "cancel"): Promise<Rollout> {
  const params = { params: { path: { rollout_id: id } } };
  if (action === "pause") return unwrap(api.POST("/api/rollouts/{rollout_id}/pause", params));
  if (action === "resume") return unwrap(api.POST("/api/rollouts/{rollout_id}/resume", params));
  return unwrap(api.POST("/api/rollouts/{rollout_id}/cancel", params));
}

export async function getRollout(id: number): Promise<Rollout> {
  return unwrap(api.GET("/api/rollouts/{rollout_id}", { params: { path: { rollout_id: id } } }), { quiet: true });
}

/** How many of a rollout's devices finished (installed, skipped, cancelled, failed). */
export function rolloutProgress(
  counts: Record<string, number>,
  total = Object.values(counts).reduce((a, b) => a + b, 0),
): { done: number; total: number; failed: number } {
  const failed = (counts.failed ?? 0) + (counts.rolled_back ?? 0);
  const done = (counts.installed ?? 0) + (counts.skipped ?? 0) + (counts.cancelled ?? 0) + failed;
  return { done, total, failed };
}

// Raw device and platform errors a person cannot act on, and what they mean.
const READABLE: [RegExp, string][] = [
  [/UnicodeDecodeError|codec can't decode|invalid (start|continuation) byte/i, "the device could not read the bundle: it is not a firmware bundle, or it was damaged on the way"],
  [/sha256 mismatch/i, "a file in the bundle is not what its manifest says (damaged download)"],
  [/size mismatch/i, "the download is not the size the manifest says (interrupted or damaged)"],
  [/bad signature/i, "the bundle's signature does not match its contents"],
  [/timed out waiting for the device/i, "the device did not report back in time (offline, or still busy)"],
  [/^cancelled$/i, "cancelled"],
];
export const MAX_REASON_CHARS = 160;

function explain(raw: string): string {
  for (const [pattern, text] of READABLE) if (pattern.test(raw)) return text;
  return raw
    .replace(/b(['"])(?:\\.|(?!\1).)*\1/g, "(binary data)")
    .replace(/\b[A-Z][A-Za-z]*(Error|Exception):\s*/g, "")
    .trim();
}

/** A rollout or device error as a sentence: known raw errors explained, byte dumps and
 * exception class names dropped, the pause threshold as a percentage, long text cut (the
 * raw text stays in the tooltip). */
export function readableReason(raw: string | null | undefined): string {
  if (!raw) return "";
  const [head = "", ...rest] = raw.split("; last error: ");
  let text = explain(head).replace(
    /\(limit (\d+) = ([\d.]+) of (\d+)\)/,
    (_, limit: string, share: string, total: string) =>
      `(limit ${limit}: ${Math.round(Number(share) * 100)}% of ${total} devices)`,
  );
  if (rest.length) text += `; last error: ${explain(rest.join("; last error: "))}`;
  return text.length > MAX_REASON_CHARS ? `${text.slice(0, MAX_REASON_CHARS - 1)}…` : text;
}

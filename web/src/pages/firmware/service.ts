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

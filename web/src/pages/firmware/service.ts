import { api, quietIfMissing, unwrap, type components } from "../../api/client";
import { ApiError } from "../../api/errors";

export type Firmware = components["schemas"]["FirmwarePublic"];
export type Rollout = components["schemas"]["RolloutPublic"];
export type RolloutCreate = components["schemas"]["RolloutCreate"];

/** null: this server has no firmware API yet (issue 4). */
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

export async function uploadFirmware(file: File, version: string, notes: string): Promise<Firmware> {
  const body = new FormData();
  body.append("file", file);
  body.append("version", version);
  body.append("notes", notes);
  return unwrap(
    api.POST("/api/firmware", {
      // openapi-fetch passes FormData through untouched; the browser sets the boundary.
      body: body as unknown as { file: string; version: string; notes?: string },
      bodySerializer: (b) => b as unknown as FormData,
    }),
  );
}

export async function deleteFirmware(id: string): Promise<void> {
  await unwrap(api.DELETE("/api/firmware/{firmware_id}", { params: { path: { firmware_id: id } } }));
}

export async function startRollout(body: RolloutCreate): Promise<Rollout> {
  return unwrap(api.POST("/api/rollouts", { body }));
}

export async function rolloutAction(id: string, action: "pause" | "resume" | "cancel"): Promise<Rollout> {
  const params = { params: { path: { rollout_id: id } } };
  if (action === "pause") return unwrap(api.POST("/api/rollouts/{rollout_id}/pause", params));
  if (action === "resume") return unwrap(api.POST("/api/rollouts/{rollout_id}/resume", params));
  return unwrap(api.POST("/api/rollouts/{rollout_id}/cancel", params));
}

export async function getRollout(id: string): Promise<Rollout> {
  return unwrap(api.GET("/api/rollouts/{rollout_id}", { params: { path: { rollout_id: id } } }), { quiet: true });
}

/** Share of a rollout's devices that finished (installed, failed, rolled back, skipped). */
export function rolloutProgress(counts: Record<string, number>): { done: number; total: number; failed: number } {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const failed = (counts.failed ?? 0) + (counts.rolled_back ?? 0);
  const done = (counts.installed ?? 0) + (counts.skipped ?? 0) + failed;
  return { done, total, failed };
}

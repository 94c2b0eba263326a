// Device page calls: history, events, commands, shadow.
import { api, quietIfMissing, unwrap, type components } from "../../api/client";
import { ApiError } from "../../api/errors";

export type Command = components["schemas"]["CommandPublic"];
export type Shadow = components["schemas"]["ShadowPublic"];
export type Telemetry = components["schemas"]["TelemetryPublic"];
export type DeviceEvent = components["schemas"]["DeviceEventPublic"];

export const FINAL_STATES = new Set(["acked", "failed", "timed_out", "expired", "cancelled"]);

export async function sendCommand(
  deviceId: string,
  command: string,
  params: Record<string, unknown> = {},
): Promise<Command> {
  return unwrap(
    api.POST("/api/devices/{device_id}/commands", {
      params: { path: { device_id: deviceId } },
      body: { command, params },
    }),
    quietIfMissing,
  );
}

/** Command history, or null when this server has no command API yet. */
export async function listCommands(deviceId: string): Promise<Command[] | null> {
  try {
    const page = await unwrap(
      api.GET("/api/devices/{device_id}/commands", {
        params: { path: { device_id: deviceId }, query: { limit: 50 } },
      }),
      // An unknown device is the page's own 404 result, not a second pop-up.
      { quiet: (e: ApiError) => e.routeMissing || e.status === 404 },
    );
    return page.data;
  } catch (exc) {
    if (exc instanceof ApiError && exc.routeMissing) return null;
    throw exc;
  }
}

export async function getShadow(deviceId: string): Promise<Shadow | null> {
  try {
    return await unwrap(
      api.GET("/api/devices/{device_id}/shadow", { params: { path: { device_id: deviceId } } }),
      { quiet: true },
    );
  } catch {
    return null;
  }
}

export type RangeKey = "1h" | "24h" | "7d" | "30d" | "custom";
export const RANGES: Record<Exclude<RangeKey, "custom">, number> = {
  "1h": 3600,
  "24h": 86400,
  "7d": 7 * 86400,
  "30d": 30 * 86400,
};

export function historyQuery(since: number, until: number) {
  return { since: String(since), until: String(until), bucket: "auto" };
}

export async function history(deviceId: string, since: number, until: number): Promise<Telemetry> {
  // The route also answers text/csv, so the generated type of the body is loose.
  return (await unwrap(
    api.GET("/api/devices/{device_id}/telemetry", {
      params: { path: { device_id: deviceId }, query: historyQuery(since, until) },
    }),
  )) as Telemetry;
}

export function csvUrl(deviceId: string, since: number, until: number): string {
  const q = new URLSearchParams({ ...historyQuery(since, until), format: "csv" });
  return `/api/devices/${encodeURIComponent(deviceId)}/telemetry?${q}`;
}

export async function events(deviceId: string): Promise<DeviceEvent[]> {
  const page = await unwrap(
    api.GET("/api/devices/{device_id}/events", {
      params: { path: { device_id: deviceId }, query: { limit: 50 } },
    }),
  );
  return page.data;
}

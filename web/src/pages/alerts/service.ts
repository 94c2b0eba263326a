// Alerts (docs/automations.md): list with filters, acknowledge, clear, live events.
import { api, unwrap, type components } from "../../api/client";
import type { LiveEvent } from "../../live/socket";

export type Alert = components["schemas"]["AlertPublic"];
export type AlertList = components["schemas"]["AlertsPublic"];
export type AlertStatus = "active" | "acknowledged" | "cleared";
export type Severity = "info" | "warning" | "critical";

export interface AlertFilters {
  status: AlertStatus[];
  severity: Severity[];
  device_id: string;
}

export const OPEN: AlertStatus[] = ["active", "acknowledged"];

export async function listAlerts(f: AlertFilters, limit = 200): Promise<AlertList> {
  return unwrap(
    api.GET("/api/alerts", {
      params: {
        query: {
          ...(f.status.length ? { status: f.status } : {}),
          ...(f.severity.length ? { severity: f.severity } : {}),
          ...(f.device_id ? { device_id: f.device_id } : {}),
          limit,
        },
      },
    }),
  );
}

export async function acknowledgeAlert(id: number, note = ""): Promise<Alert> {
  return unwrap(api.POST("/api/alerts/{alert_id}/acknowledge", { params: { path: { alert_id: id } }, body: { note } }));
}

export async function clearAlert(id: number, note = ""): Promise<Alert> {
  return unwrap(api.POST("/api/alerts/{alert_id}/clear", { params: { path: { alert_id: id } }, body: { note } }));
}

export function matchesFilters(a: Alert, f: AlertFilters): boolean {
  return (
    (!f.status.length || f.status.includes(a.status as AlertStatus)) &&
    (!f.severity.length || f.severity.includes(a.severity as Severity)) &&
    (!f.device_id || a.device_id === f.device_id)
  );
}

/** Apply a live `alert` event (payload: {action, ...the alert}) to the shown list:
 * replace the alert by id, add a new one on top, drop one that no longer matches. */
export function applyAlertEvent(list: Alert[], event: LiveEvent, f: AlertFilters): Alert[] {
  const { action: _action, ...rest } = event.payload as Record<string, unknown>;
  const alert = rest as unknown as Alert;
  if (typeof alert.id !== "number") return list;
  const others = list.filter((a) => a.id !== alert.id);
  if (!matchesFilters(alert, f)) return others;
  const index = list.findIndex((a) => a.id === alert.id);
  if (index < 0) return [alert, ...list];
  const next = list.slice();
  next[index] = alert;
  return next;
}

export const SEVERITY_COLOR: Record<string, string> = { info: "blue", warning: "orange", critical: "red" };
export const STATUS_COLOR: Record<string, string> = { active: "red", acknowledged: "gold", cleared: "default" };

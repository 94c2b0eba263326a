// Recent platform activity for the overview feed: loaded from the server (so it survives
// a reload), then kept current by live events. A command or an alert is one entry in its
// latest state (keyed command:<id> / alert:<id>), not one line per step.
import { useSyncExternalStore } from "react";
import { api, unwrap, type components } from "../api/client";
import { eventIso } from "../api/time";
import { live, type AlertPayload, type CommandUpdatePayload, type EventType, type LiveEvent } from "./socket";
import { throttle } from "./throttle";

export type ActivityItem = components["schemas"]["ActivityItem"];

export const ACTIVITY_LIMIT = 50;
export const ACTIVITY_EVENTS: EventType[] = [
  "device_registered",
  "device_status",
  "device_event",
  "command_update",
  "alert",
];

let items: ActivityItem[] = [];
let snapshot: ActivityItem[] = [];
let liveSeq = 0;
const listeners = new Set<() => void>();
const publish = throttle(() => {
  snapshot = items;
  listeners.forEach((l) => l());
}, 300);

/** Merge entries (newer replaces the same key), newest first. */
export function mergeActivity(list: ActivityItem[], added: ActivityItem[]): ActivityItem[] {
  const byKey = new Map(list.map((i) => [i.key, i]));
  for (const item of added) {
    const old = byKey.get(item.key);
    if (!old || Date.parse(item.ts) >= Date.parse(old.ts)) byKey.set(item.key, item);
  }
  return [...byKey.values()].sort((a, b) => Date.parse(b.ts) - Date.parse(a.ts)).slice(0, ACTIVITY_LIMIT);
}

/** The entry a live event makes (the same shape GET /api/activity returns). */
export function fromEvent(event: LiveEvent): ActivityItem | null {
  const p = event.payload as Record<string, unknown>;
  const ts = eventIso(event);
  switch (event.type) {
    case "command_update": {
      const command = event.payload as unknown as CommandUpdatePayload;
      return { key: `command:${command.id}`, type: "command", ts, device_id: event.device_id, data: p };
    }
    case "alert": {
      const { action: _action, ...alert } = event.payload as unknown as AlertPayload;
      return { key: `alert:${alert.id}`, type: "alert", ts, device_id: event.device_id, data: alert };
    }
    case "device_registered":
      return { key: `live:${++liveSeq}`, type: "registered", ts, device_id: event.device_id, data: p };
    case "device_status":
      return { key: `live:${++liveSeq}`, type: "status", ts, device_id: event.device_id, data: p };
    case "device_event":
      return { key: `live:${++liveSeq}`, type: "device_event", ts, device_id: event.device_id, data: p };
    default:
      return null;
  }
}

export function pushActivity(event: LiveEvent): void {
  const item = fromEvent(event);
  if (!item) return;
  items = mergeActivity(items, [item]);
  publish();
}

async function load(): Promise<void> {
  const loaded = await unwrap(api.GET("/api/activity", { params: { query: { limit: ACTIVITY_LIMIT } } }), {
    quiet: true,
  }).catch(() => null);
  if (!loaded) return;
  // Live entries of things the server lists too are the same entries (commands, alerts);
  // presence and device events seen live before the load are in the server's list.
  const newest = Math.max(0, ...loaded.data.map((i) => Date.parse(i.ts)));
  items = mergeActivity(
    items.filter((i) => !i.key.startsWith("live:") || Date.parse(i.ts) > newest),
    loaded.data,
  );
  publish();
}

export function startActivity(): () => void {
  void load();
  return live.subscribe(ACTIVITY_EVENTS, ["*"], pushActivity);
}

export function useActivity(): ActivityItem[] {
  return useSyncExternalStore(
    (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    () => snapshot,
  );
}

function paramsText(params: unknown): string {
  if (!params || typeof params !== "object") return "";
  return Object.values(params as Record<string, unknown>)
    .map((v) => String(v))
    .join(" ");
}

export function describe(item: ActivityItem): string {
  const d = item.data as Record<string, unknown>;
  switch (item.type) {
    case "registered":
      return `registered${d.type ? ` (${String(d.type)})` : ""}`;
    case "status":
      return `${String(d.status)}${d.reason ? ` (${String(d.reason)})` : ""}`;
    case "device_event":
      return `${String(d.event)}${d.level && d.level !== "info" ? ` [${String(d.level)}]` : ""}`;
    case "command": {
      const params = paramsText(d.params);
      return `command ${String(d.command ?? "")}${params ? ` ${params}` : ""}: ${String(d.status ?? "")}`;
    }
    case "alert":
      return `${String(d.severity)} alert "${String(d.name)}": ${String(d.status)}`;
    default:
      return item.type;
  }
}

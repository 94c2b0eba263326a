// Recent platform activity (registrations, presence, device events, commands) for the
// overview feed; collected from the moment the app opens, newest first.
import { useSyncExternalStore } from "react";
import { live, type EventType, type LiveEvent } from "./socket";
import { throttle } from "./throttle";

export const ACTIVITY_LIMIT = 50;
export const ACTIVITY_EVENTS: EventType[] = [
  "device_registered",
  "device_status",
  "device_event",
  "command_update",
];

let items: LiveEvent[] = [];
let snapshot: LiveEvent[] = [];
const listeners = new Set<() => void>();
const publish = throttle(() => {
  snapshot = items;
  listeners.forEach((l) => l());
}, 300);

export function pushActivity(event: LiveEvent): void {
  items = [event, ...items].slice(0, ACTIVITY_LIMIT);
  publish();
}

export function startActivity(): () => void {
  return live.subscribe(ACTIVITY_EVENTS, ["*"], pushActivity);
}

export function useActivity(): LiveEvent[] {
  return useSyncExternalStore(
    (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    () => snapshot,
  );
}

export function describe(event: LiveEvent): string {
  const p = event.payload as Record<string, unknown>;
  switch (event.type) {
    case "device_registered":
      return `registered${p.type ? ` (${String(p.type)})` : ""}`;
    case "device_status":
      return `${String(p.status)}${p.reason ? ` (${String(p.reason)})` : ""}`;
    case "device_event":
      return `${String(p.event)}${p.level && p.level !== "info" ? ` [${String(p.level)}]` : ""}`;
    case "command_update":
      return `command ${String(p.command ?? "")} ${String(p.status ?? "")}`;
    default:
      return event.type;
  }
}

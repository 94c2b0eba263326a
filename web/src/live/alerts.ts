// Active (unacknowledged) alerts by severity, for the menu badge and the overview: read
// from GET /api/alerts, again whenever an alert is raised, acknowledged or cleared.
import { useEffect, useSyncExternalStore } from "react";
import { api, unwrap } from "../api/client";
import { live } from "./socket";
import { throttle } from "./throttle";

export interface ActiveAlerts {
  total: number;
  bySeverity: Record<string, number>;
}

export const ALERTS_POLL_MS = 30_000;

let current: ActiveAlerts | null = null;
let users = 0;
let stop: (() => void) | null = null;
const listeners = new Set<() => void>();

async function load(): Promise<void> {
  const list = await unwrap(
    api.GET("/api/alerts", { params: { query: { status: ["active"], limit: 1 } } }),
    { quiet: true },
  ).catch(() => null);
  if (!list) return;
  const bySeverity = list.active_by_severity ?? {};
  current = { total: Object.values(bySeverity).reduce((a, b) => a + b, 0), bySeverity };
  listeners.forEach((l) => l());
}

const reload = throttle(() => void load(), 500);

function start(): () => void {
  void load();
  const unsubscribe = live.subscribe(["alert"], ["*"], reload);
  const timer = setInterval(() => void load(), ALERTS_POLL_MS);
  return () => {
    unsubscribe();
    clearInterval(timer);
  };
}

/** Active alerts; null until the first answer. */
export function useActiveAlerts(): ActiveAlerts | null {
  useEffect(() => {
    users += 1;
    if (users === 1) stop = start();
    return () => {
      users -= 1;
      if (users === 0) {
        stop?.();
        stop = null;
      }
    };
  }, []);
  return useSyncExternalStore(
    (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    () => current,
  );
}

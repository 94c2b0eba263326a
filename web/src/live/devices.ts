// The device list, kept current by live events. Updates land in a Map at any rate;
// React hears about them at most every RENDER_INTERVAL_MS (longer for big fleets:
// one millisecond per device, up to MAX_RENDER_INTERVAL_MS), so 1,000 devices reporting
// every 2 s cost one table render per second, not 500.
import { useEffect, useSyncExternalStore } from "react";
import { api, unwrap, type components } from "../api/client";
import { live, type DataPayload, type LiveEvent } from "./socket";
import { throttle } from "./throttle";
import { eventIso } from "../api/time";

export type Device = components["schemas"]["DevicePublic"];
export interface DeviceRow extends Device {
  latest: Record<string, number>;
}

/** For device pickers: "Kitchen (A4CF12B3C4D5)", or the id alone when it is the name. */
export function deviceLabel(d: { id: string; name: string }): string {
  return d.name && d.name !== d.id ? `${d.name} (${d.id})` : d.id;
}

export const RENDER_INTERVAL_MS = 500;
export const MAX_RENDER_INTERVAL_MS = 2000;

type Status = "idle" | "loading" | "ready" | "error";

export class DeviceStore {
  private byId = new Map<string, DeviceRow>();
  private snapshot: DeviceRow[] = [];
  private listeners = new Set<() => void>();
  private users = 0;
  private unsubscribe: (() => void) | null = null;
  private refetching = new Set<string>();
  /** Events met while a load is in flight, applied again to what it returns. */
  private duringLoad = new Set<LiveEvent[]>();
  status: Status = "idle";
  error: string | null = null;
  private readonly notify: ReturnType<typeof throttle>;

  constructor(
    private readonly load: () => Promise<Device[]>,
    private readonly loadOne: (id: string) => Promise<Device | null>,
    private readonly socket = live,
    interval = RENDER_INTERVAL_MS,
    // The latest values of every device, so the list shows readings before the next
    // live ones (a device reporting every few minutes would show none until then).
    private readonly loadLatest: () => Promise<Record<string, Record<string, number>>> = async () => ({}),
  ) {
    this.notify = throttle(
      () => this.publish(),
      () => Math.min(MAX_RENDER_INTERVAL_MS, Math.max(interval, this.byId.size)),
    );
  }

  getSnapshot = (): DeviceRow[] => this.snapshot;

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  get(id: string): DeviceRow | undefined {
    return this.byId.get(id);
  }

  /** Reference-counted: the first user loads and goes live; the last one stops. */
  acquire(): () => void {
    this.users += 1;
    if (this.users === 1) {
      this.unsubscribe = this.socket.subscribe(
        ["device_registered", "device_updated", "device_status", "device_data", "device_state"],
        ["*"],
        (e) => this.apply(e),
        // Live (and live again after a reconnect): load again, so a device registered
        // between the first load and the subscription, or while away, is not missing.
        () => void this.reload(),
      );
      void this.reload();
    }
    return () => {
      this.users -= 1;
      if (this.users === 0) {
        this.unsubscribe?.();
        this.unsubscribe = null;
      }
    };
  }

  async reload(): Promise<void> {
    this.status = this.snapshot.length ? this.status : "loading";
    this.notify();
    const seen: LiveEvent[] = [];
    this.duringLoad.add(seen);
    try {
      // Readings are a nicety: the list loads without them.
      const [devices, latest] = await Promise.all([this.load(), this.loadLatest().catch(() => ({}))]);
      const next = new Map<string, DeviceRow>();
      for (const d of devices) {
        const stored: Record<string, number> = (latest as Record<string, Record<string, number>>)[d.id] ?? {};
        next.set(d.id, { ...d, latest: { ...stored, ...this.byId.get(d.id)?.latest } });
      }
      this.byId = next;
      this.status = "ready";
      this.error = null;
      // The load may have read the database just before these.
      this.duringLoad.delete(seen);
      for (const e of seen) this.apply(e);
    } catch (exc) {
      this.status = "error";
      this.error = String(exc);
    } finally {
      this.duringLoad.delete(seen);
    }
    this.publish();
  }

  /** Local edit (rename, tags, delete) without waiting for the server to tell us. */
  put(device: Device): void {
    this.byId.set(device.id, { ...device, latest: this.byId.get(device.id)?.latest ?? {} });
    this.notify();
  }

  remove(id: string): void {
    this.byId.delete(id);
    this.notify();
  }

  apply(event: LiveEvent): void {
    for (const seen of this.duringLoad) seen.push(event);
    const iso = eventIso(event);
    const row = this.byId.get(event.device_id);
    switch (event.type) {
      case "device_registered":
      case "device_updated":
        this.refetch(event.device_id);
        break;
      case "device_status": {
        const status = (event.payload as { status?: string }).status;
        if (row && (status === "online" || status === "offline")) {
          this.byId.set(row.id, { ...row, status, status_changed_at: iso });
        } else if (!row) this.refetch(event.device_id);
        break;
      }
      case "device_data": {
        if (!row) {
          this.refetch(event.device_id);
          break;
        }
        const { metrics } = event.payload as unknown as DataPayload;
        this.byId.set(row.id, {
          ...row,
          status: "online",
          last_seen: iso,
          latest: { ...row.latest, ...metrics },
        });
        break;
      }
      case "device_state":
        if (row) this.byId.set(row.id, { ...row, reported_state: event.payload, last_seen: iso });
        break;
      default:
        return;
    }
    this.notify();
  }

  private refetch(id: string): void {
    // Until the list has loaded, it will bring this device along: don't ask one by one.
    if (this.status !== "ready" || this.refetching.has(id)) return;
    this.refetching.add(id);
    this.loadOne(id)
      .then((device) => {
        if (device) this.put(device);
      })
      .catch(() => undefined)
      .finally(() => this.refetching.delete(id));
  }

  private publish(): void {
    this.notify.cancel();
    this.snapshot = [...this.byId.values()];
    for (const l of this.listeners) l();
  }
}

export const devices = new DeviceStore(
  async () => (await unwrap(api.GET("/api/devices"))).data,
  async (id) =>
    unwrap(api.GET("/api/devices/{device_id}", { params: { path: { device_id: id } } }), {
      quiet: true,
    }).catch(() => null),
  live,
  RENDER_INTERVAL_MS,
  async () => {
    const { data } = await unwrap(api.GET("/api/latest"), { quiet: true });
    const out: Record<string, Record<string, number>> = {};
    for (const [id, metrics] of Object.entries(data)) {
      out[id] = Object.fromEntries(Object.entries(metrics).map(([name, v]) => [name, v.value]));
    }
    return out;
  },
);

/** All devices, live. */
export function useDevices(store: DeviceStore = devices): {
  rows: DeviceRow[];
  status: Status;
  error: string | null;
} {
  useEffect(() => store.acquire(), [store]);
  const rows = useSyncExternalStore(store.subscribe, store.getSnapshot);
  return { rows, status: store.status, error: store.error };
}

import { describe, expect, it, vi } from "vitest";
import { DeviceStore, type Device } from "./devices";
import type { LiveSocket } from "./socket";

function device(id: string, extra: Partial<Device> = {}): Device {
  return {
    id,
    name: `ESP32-${id}`,
    type: null,
    capabilities: [],
    firmware_version: null,
    protocol: 1,
    ip: null,
    rssi: null,
    report_interval: 2,
    status: "offline",
    status_changed_at: null,
    first_seen: "2026-01-01T00:00:00Z",
    last_seen: null,
    notes: "",
    tags: [],
    metadata: {},
    reported_state: null,
    ...extra,
  } as Device;
}

const fakeSocket = { subscribe: () => () => undefined } as unknown as LiveSocket;

describe("DeviceStore", () => {
  it("applies live events and renders at most once per interval", async () => {
    vi.useFakeTimers();
    const loadOne = vi.fn(async (id: string) => device(id, { name: "new one" }));
    const store = new DeviceStore(async () => [device("A")], loadOne, fakeSocket, 500);
    const listener = vi.fn();
    store.subscribe(listener);
    const release = store.acquire();
    await vi.advanceTimersByTimeAsync(0);
    expect(store.getSnapshot()).toHaveLength(1);
    listener.mockClear();

    for (let i = 0; i < 100; i++) {
      store.apply({ type: "device_data", device_id: "A", ts: 1_800_000_000 + i, payload: { metrics: { t: i } } });
    }
    expect(listener).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(500);
    expect(listener).toHaveBeenCalledTimes(1);
    const row = store.getSnapshot()[0]!;
    expect(row.status).toBe("online");
    expect(row.latest).toEqual({ t: 99 });
    expect(row.last_seen).toBe(new Date((1_800_000_000 + 99) * 1000).toISOString());

    store.apply({ type: "device_status", device_id: "A", ts: 1_800_000_200, payload: { status: "offline" } });
    await vi.advanceTimersByTimeAsync(500);
    expect(store.getSnapshot()[0]!.status).toBe("offline");

    // An unknown device is fetched once, however many events name it.
    store.apply({ type: "device_registered", device_id: "B", ts: 1, payload: {} });
    store.apply({ type: "device_data", device_id: "B", ts: 1, payload: { metrics: {} } });
    await vi.advanceTimersByTimeAsync(500);
    expect(loadOne).toHaveBeenCalledTimes(1);
    expect(store.getSnapshot().map((d) => d.id).sort()).toEqual(["A", "B"]);
    release();
    vi.useRealTimers();
  });

  it("keeps what changed while the list was loading, and loads again when live", async () => {
    vi.useFakeTimers();
    let live: (() => void) | undefined;
    const socket = {
      subscribe: (_e: unknown, _d: unknown, _h: unknown, onLive?: () => void) => {
        live = onLive;
        return () => undefined;
      },
    } as unknown as LiveSocket;
    let release: (list: Device[]) => void = () => undefined;
    const load = vi.fn(() => new Promise<Device[]>((r) => (release = r)));
    const store = new DeviceStore(load, async () => null, socket, 500);
    store.acquire();
    // The list was read before A went offline; the event came while it was on its way.
    store.apply({ type: "device_status", device_id: "A", ts: 1_800_000_000, payload: { status: "offline" } });
    release([device("A", { status: "online" })]);
    await vi.advanceTimersByTimeAsync(500);
    expect(store.getSnapshot()[0]!.status).toBe("offline");
    live?.();
    expect(load).toHaveBeenCalledTimes(2);
    release([device("A", { status: "offline" }), device("B")]);
    await vi.advanceTimersByTimeAsync(500);
    expect(store.getSnapshot().map((d) => d.id)).toEqual(["A", "B"]);
    vi.useRealTimers();
  });

  it("shows the stored latest values at once; live ones win", async () => {
    vi.useFakeTimers();
    const store = new DeviceStore(
      async () => [device("A"), device("B")],
      async () => null,
      fakeSocket,
      500,
      async () => ({ A: { temperature: 20, humidity: 40 } }),
    );
    store.acquire();
    await vi.advanceTimersByTimeAsync(500);
    expect(store.get("A")!.latest).toEqual({ temperature: 20, humidity: 40 });
    expect(store.get("B")!.latest).toEqual({});
    store.apply({ type: "device_data", device_id: "A", ts: 1_800_000_000, payload: { metrics: { temperature: 22 } } });
    await store.reload();
    expect(store.get("A")!.latest).toEqual({ temperature: 22, humidity: 40 });
    vi.useRealTimers();
  });

  it("loads the list when the latest values cannot be read", async () => {
    const store = new DeviceStore(
      async () => [device("A")],
      async () => null,
      fakeSocket,
      500,
      async () => Promise.reject(new Error("down")),
    );
    await store.reload();
    expect(store.status).toBe("ready");
    expect(store.get("A")!.latest).toEqual({});
  });
});

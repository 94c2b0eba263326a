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
});

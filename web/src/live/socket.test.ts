import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { LiveSocket } from "./socket";

const auth = vi.hoisted(() => ({ refresh: vi.fn(), expired: vi.fn() }));
vi.mock("../api/auth", async (importOriginal) => ({
  ...(await importOriginal<typeof import("../api/auth")>()),
  refreshTokens: auth.refresh,
  sessionExpired: auth.expired,
}));

class FakeWs {
  static instances: FakeWs[] = [];
  readyState = 0;
  sent: unknown[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((m: { data: string }) => void) | null = null;
  onclose: ((c: { code: number; reason?: string }) => void) | null = null;
  constructor(readonly url: string) {
    FakeWs.instances.push(this);
  }
  send(text: string) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
    this.onclose?.({ code: 1006 });
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  push(message: object) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
}

const flush = () => new Promise((r) => setTimeout(r, 0));

describe("LiveSocket", () => {
  beforeEach(() => {
    FakeWs.instances = [];
    vi.stubGlobal("WebSocket", { OPEN: 1 });
  });
  afterEach(() => vi.unstubAllGlobals());

  it("subscribes to the union of interests and routes events to matching handlers", async () => {
    const socket = new LiveSocket(() => "ws://x/api/ws", (u) => new FakeWs(u) as unknown as WebSocket);
    const all = vi.fn();
    const one = vi.fn();
    socket.subscribe(["device_status"], ["*"], all);
    socket.subscribe(["device_data"], ["A"], one);
    await flush();
    const ws = FakeWs.instances[0]!;
    ws.open();
    const sub = ws.sent.at(-1) as { action: string; events: string[]; devices: string[] };
    expect(sub.action).toBe("subscribe");
    expect(sub.events.sort()).toEqual(["device_data", "device_status"]);
    expect(sub.devices.sort()).toEqual(["*", "A"]);

    ws.push({ type: "device_data", device_id: "A", ts: 1, payload: {} });
    ws.push({ type: "device_data", device_id: "B", ts: 1, payload: {} });
    ws.push({ type: "device_status", device_id: "B", ts: 1, payload: {} });
    expect(one).toHaveBeenCalledTimes(1);
    expect(all).toHaveBeenCalledTimes(1);
    // A batch: one frame, an array of events, each routed as if it came alone.
    ws.push([
      { type: "device_data", device_id: "A", ts: 2, payload: {} },
      { type: "device_status", device_id: "A", ts: 2, payload: {} },
      { type: "dropped", count: 3 },
    ]);
    expect(one).toHaveBeenCalledTimes(2);
    expect(all).toHaveBeenCalledTimes(2);
    expect(socket.dropped).toBe(3);
    socket.stop();
  });

  it("reconnects with backoff and subscribes again", async () => {
    vi.useFakeTimers();
    const socket = new LiveSocket(() => "ws://x/api/ws", (u) => new FakeWs(u) as unknown as WebSocket);
    socket.subscribe(["device_data"], ["A"], () => undefined);
    await vi.advanceTimersByTimeAsync(0);
    FakeWs.instances[0]!.open();
    FakeWs.instances[0]!.close();
    expect(socket.state).toBe("closed");
    await vi.advanceTimersByTimeAsync(600);
    expect(FakeWs.instances).toHaveLength(2);
    const again = FakeWs.instances[1]!;
    again.open();
    expect(again.sent).toContainEqual({ action: "subscribe", events: ["device_data"], devices: ["A"], batch: true });
    socket.stop();
    vi.useRealTimers();
  });

  it("signs out when the server cuts the socket because access was revoked", async () => {
    auth.refresh.mockResolvedValue(false);
    const socket = new LiveSocket(() => "ws://x/api/ws", (u) => new FakeWs(u) as unknown as WebSocket);
    socket.subscribe(["device_data"], ["*"], () => undefined);
    await flush();
    const ws = FakeWs.instances[0]!;
    ws.open();
    ws.onclose?.({ code: 1008, reason: "revoked" });
    await flush();
    expect(auth.refresh).toHaveBeenCalled();
    expect(auth.expired).toHaveBeenCalled();
    expect(FakeWs.instances).toHaveLength(1); // no reconnect with the dead token
    socket.stop();
  });

  it("unsubscribes what no page wants any more", async () => {
    const socket = new LiveSocket(() => "ws://x", (u) => new FakeWs(u) as unknown as WebSocket);
    const stopA = socket.subscribe(["device_data"], ["*"], () => undefined);
    socket.subscribe(["device_status"], ["B"], () => undefined);
    await flush();
    const ws = FakeWs.instances[0]!;
    ws.open();
    stopA();
    const [unsub, sub] = ws.sent.slice(-2) as { action: string; events: string[]; devices: string[] }[];
    expect(unsub!.action).toBe("unsubscribe");
    expect(unsub!.devices).toContain("*");
    expect(unsub!.devices).not.toEqual(["*"]); // the hub would keep "*" for exactly ["*"]
    expect(sub).toEqual({ action: "subscribe", events: ["device_status"], devices: ["B"], batch: true });
    socket.stop();
  });

  it("tells an interest it is live once the server confirms, and again after a reconnect", async () => {
    vi.useFakeTimers();
    const socket = new LiveSocket(() => "ws://x/api/ws", (u) => new FakeWs(u) as unknown as WebSocket);
    const alerts = vi.fn();
    const one = vi.fn();
    socket.subscribe(["alert"], ["*"], () => undefined, alerts);
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeWs.instances[0]!;
    ws.open();
    expect(alerts).not.toHaveBeenCalled(); // sent, not yet confirmed
    ws.push({ type: "subscribed", events: ["device_data"], devices: ["*"] });
    expect(alerts).not.toHaveBeenCalled(); // a confirmation that does not cover it
    ws.push({ type: "subscribed", events: ["alert"], devices: ["*"] });
    expect(alerts).toHaveBeenCalledTimes(1);
    ws.push({ type: "subscribed", events: ["alert"], devices: ["*"] });
    expect(alerts).toHaveBeenCalledTimes(1); // once per connection
    // A later interest already covered is live at once.
    socket.subscribe(["alert"], ["A"], () => undefined, one);
    await vi.advanceTimersByTimeAsync(0);
    expect(one).toHaveBeenCalledTimes(1);
    ws.close();
    await vi.advanceTimersByTimeAsync(600);
    const again = FakeWs.instances[1]!;
    again.open();
    again.push({ type: "subscribed", events: ["alert"], devices: ["*"] });
    expect(alerts).toHaveBeenCalledTimes(2);
    expect(one).toHaveBeenCalledTimes(2);
    // Events dropped for this client: the pages load again; the same count again is
    // no new loss.
    again.push({ type: "dropped", count: 5 });
    expect(alerts).toHaveBeenCalledTimes(3);
    again.push({ type: "dropped", count: 5 });
    expect(alerts).toHaveBeenCalledTimes(3);
    socket.stop();
    vi.useRealTimers();
  });
});

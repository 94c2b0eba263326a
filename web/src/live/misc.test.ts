import { describe, expect, it } from "vitest";
import { relativeTime } from "../hooks/useNow";
import { ApiError, detailOf } from "../api/errors";
import { classify } from "../components/Notifier";
import { brokerFromInfo } from "../components/ConnectHelp";
import { appendSample, LIVE_MAX_POINTS } from "../pages/device/LiveCharts";
import { decimate, toBand } from "../pages/device/HistoryChart";
import { mergeCommand } from "../pages/device/useCommands";
import { rate } from "../pages/overview/OverviewPage";
import { matches } from "../pages/devices/service";
import { rolloutProgress } from "../pages/firmware/service";
import { expiresIn, userFromToken } from "../api/auth";
import type { Command } from "../pages/device/service";

describe("small pure helpers", () => {
  it("formats relative time", () => {
    const now = Date.parse("2026-01-01T00:10:00Z");
    expect(relativeTime(null, now)).toBe("never");
    expect(relativeTime("2026-01-01T00:09:58Z", now)).toBe("just now");
    expect(relativeTime("2026-01-01T00:09:30Z", now)).toBe("30 s ago");
    expect(relativeTime("2026-01-01T00:00:00Z", now)).toBe("10 min ago");
    // still to come: a retry's next try
    expect(relativeTime("2026-01-01T00:10:40Z", now)).toBe("in 40 s");
    expect(relativeTime("2026-01-01T00:40:00Z", now)).toBe("in 30 min");
    expect(relativeTime("2026-01-01T00:10:02Z", now)).toBe("just now");
  });

  it("reads FastAPI errors and knows a missing route from a missing device", () => {
    expect(detailOf({ detail: "device X not found" }, "")).toBe("device X not found");
    expect(detailOf({ detail: [{ loc: ["body", "params", "angle"], msg: "too big" }] }, "")).toBe(
      "params.angle: too big",
    );
    expect(new ApiError(404, "Not Found", "/x").routeMissing).toBe(true);
    expect(new ApiError(404, "device X not found", "/x").routeMissing).toBe(false);
  });

  it("classifies notifications", () => {
    expect(classify({ type: "device_status", device_id: "A", ts: 0, payload: { status: "offline" } })?.kind).toBe("offline");
    expect(classify({ type: "command_update", device_id: "A", ts: 0, payload: { status: "acked" } })).toBeNull();
    expect(classify({ type: "command_update", device_id: "A", ts: 0, payload: { status: "timed_out" } })?.kind).toBe(
      "command_failed",
    );
  });

  it("derives the broker address", () => {
    expect(brokerFromInfo(undefined, { hostname: "pi.local" })).toEqual({ host: "pi.local", port: 1883 });
    expect(brokerFromInfo({ mqtt: { host: null, port: 1884 } }, { hostname: "h" })).toEqual({ host: "h", port: 1884 });
    expect(brokerFromInfo({ mqtt: { host: "mq.example", port: 8883 } }, { hostname: "h" }).host).toBe("mq.example");
  });

  it("keeps live series bounded", () => {
    let s = {};
    for (let i = 0; i < LIVE_MAX_POINTS + 50; i++) s = appendSample(s, 1_800_000_000 + i, { t: i });
    const points = (s as Record<string, { v: number }[]>).t!;
    expect(points).toHaveLength(LIVE_MAX_POINTS);
    expect(points.at(-1)!.v).toBe(LIVE_MAX_POINTS + 49);
  });

  it("turns buckets into a min..max band", () => {
    expect(toBand([{ ts: "2026-01-01T00:00:00Z", avg: 2, min: 1, max: 3 }])[0]!.range).toEqual([1, 3]);
    expect(toBand([{ ts: "2026-01-01T00:00:00Z", value: 5 }])[0]!.avg).toBe(5);
  });

  it("decimates a long series without losing its extremes", () => {
    const data = Array.from({ length: 10_000 }, (_, i) => ({ t: i, avg: i === 5000 ? 99 : 1, range: [i === 7 ? -5 : 0, 2] as [number, number] }));
    const out = decimate(data, 1000);
    expect(out).toHaveLength(1000);
    expect(Math.min(...out.map((p) => p.range[0]))).toBe(-5);
    expect(Math.max(...out.map((p) => p.avg))).toBeGreaterThan(1);
  });

  it("never moves a finished command back", () => {
    const c = { id: "1", command: "relay", status: "acked" } as Command;
    expect(mergeCommand([c], { id: "1", status: "sent" })[0]!.status).toBe("acked");
    expect(mergeCommand([], { id: "2", command: "servo", status: "queued" } as Command)).toHaveLength(1);
  });

  it("computes messages per second", () => {
    expect(rate(null, { at: 1000, count: 5 })).toBeNull();
    expect(rate({ at: 0, count: 0 }, { at: 2000, count: 10 })).toBe(5);
  });

  it("filters devices", () => {
    const d = { id: "ABC", name: "Kitchen", type: "esp32-env", tags: ["home"], status: "online", firmware_version: "1.0" };
    const f = { q: "", status: null, type: null, tag: null };
    expect(matches(d as never, { ...f, q: "kitch" })).toBe(true);
    expect(matches(d as never, { ...f, status: "offline" })).toBe(false);
    expect(matches(d as never, { ...f, tag: "home" })).toBe(true);
  });

  it("counts rollout progress", () => {
    expect(rolloutProgress({ installed: 3, failed: 1, pending: 6 }, 10)).toEqual({ done: 4, total: 10, failed: 1 });
  });

  it("reads role and expiry from a token", () => {
    const payload = btoa(JSON.stringify({ sub: "1", role: "viewer", exp: 100 }));
    const token = `h.${payload}.s`;
    expect(userFromToken(token, "bob")).toEqual({ username: "bob", role: "viewer", open: false });
    expect(expiresIn(token, 40_000)).toBe(60);
  });
});

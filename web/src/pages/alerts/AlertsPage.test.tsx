import { beforeEach, describe, expect, it, vi } from "vitest";
import { act, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { App } from "antd";
import { MemoryRouter } from "react-router-dom";
import type { User } from "../../api/auth";
import type { LiveEvent } from "../../live/socket";
import { applyAlertEvent, OPEN, type Alert } from "./service";

const user = vi.hoisted(() => ({ current: null as User | null }));
const live = vi.hoisted(() => ({ handler: null as ((e: LiveEvent) => void) | null, events: [] as string[] }));
vi.mock("../../live/devices", async (importOriginal) => ({
  ...(await importOriginal<typeof import("../../live/devices")>()),
  useDevices: () => ({ rows: [], status: "ready", error: null }),
}));
vi.mock("../../hooks/useAuth", () => ({ useUser: () => user.current }));
vi.mock("../../hooks/useLive", () => ({
  useLiveEvents: (events: string[], _devices: string[], handler: (e: LiveEvent) => void) => {
    live.events = events;
    live.handler = handler;
  },
}));
vi.mock("./service", async (importOriginal) => ({
  ...(await importOriginal<typeof import("./service")>()),
  listAlerts: vi.fn(),
  acknowledgeAlert: vi.fn(),
  clearAlert: vi.fn(),
}));
const service = await import("./service");
const { default: AlertsPage } = await import("./AlertsPage");

function alert(id: number, over: Partial<Alert> = {}): Alert {
  return {
    id,
    rule_id: 1,
    device_id: "GASKITCHEN01",
    name: "Kitchen gas safety",
    severity: "critical",
    status: "active",
    message: `Gas 650 on kitchen #${id}`,
    data: {},
    raised_at: "2026-11-27T10:00:00Z",
    acknowledged_at: null,
    acknowledged_by: null,
    cleared_at: null,
    cleared_by: null,
    history: [{ status: "active", ts: "2026-11-27T10:00:00Z" }],
    ...over,
  };
}

const filters = { status: OPEN, severity: [], device_id: "" };
const event = (a: Alert, action: string): LiveEvent => ({
  type: "alert",
  device_id: a.device_id ?? "-",
  ts: 0,
  payload: { action, ...a },
});

function page() {
  return render(
    <App>
      <MemoryRouter>
        <AlertsPage />
      </MemoryRouter>
    </App>,
  );
}

beforeEach(() => {
  vi.mocked(service.listAlerts).mockResolvedValue({ data: [alert(1)], count: 1, open: { active: 1 } });
});

describe("applyAlertEvent", () => {
  it("adds raised alerts, replaces changed ones, drops those leaving the filter", () => {
    const raised = applyAlertEvent([alert(1)], event(alert(2), "raised"), filters);
    expect(raised.map((a) => a.id)).toEqual([2, 1]);
    const acked = applyAlertEvent(raised, event(alert(2, { status: "acknowledged" }), "acknowledged"), filters);
    expect(acked.map((a) => [a.id, a.status])).toEqual([
      [2, "acknowledged"],
      [1, "active"],
    ]);
    const cleared = applyAlertEvent(acked, event(alert(1, { status: "cleared" }), "cleared"), filters);
    expect(cleared.map((a) => a.id)).toEqual([2]); // cleared is not an open status
    const other = applyAlertEvent(cleared, event(alert(3, { severity: "info" }), "raised"), { ...filters, severity: ["critical"] });
    expect(other.map((a) => a.id)).toEqual([2]);
  });
});

describe("AlertsPage", () => {
  it("lists open alerts and shows live ones as they are raised", async () => {
    user.current = { username: "v", role: "viewer", open: false };
    page();
    expect(await screen.findByText("Gas 650 on kitchen #1")).toBeInTheDocument();
    expect(vi.mocked(service.listAlerts).mock.calls[0][0].status).toEqual(["active", "acknowledged"]);
    expect(live.events).toEqual(["alert"]);
    act(() => live.handler?.(event(alert(5), "raised")));
    expect(await screen.findByText("Gas 650 on kitchen #5")).toBeInTheDocument();
    // Viewers can look, not act.
    expect(screen.queryByText("Acknowledge")).toBeNull();
    expect(screen.queryByText("Clear")).toBeNull();
  });

  it("acknowledges an alert", async () => {
    user.current = { username: "op", role: "operator", open: false };
    vi.mocked(service.acknowledgeAlert).mockResolvedValue(
      alert(1, { status: "acknowledged", acknowledged_by: "op", acknowledged_at: "2026-11-27T10:01:00Z" }),
    );
    page();
    fireEvent.click(await screen.findByText("Acknowledge"));
    await waitFor(() => expect(service.acknowledgeAlert).toHaveBeenCalledWith(1));
    expect(await screen.findByText("op")).toBeInTheDocument(); // acknowledged by
    expect(document.querySelector(".ant-table .ant-tag-gold")).toHaveTextContent("acknowledged");
    expect(screen.queryByText("Acknowledge")).toBeNull();
  });
});

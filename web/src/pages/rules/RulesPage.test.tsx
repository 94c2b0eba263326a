import { beforeEach, describe, expect, it, vi } from "vitest";
import { act, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { App } from "antd";
import { MemoryRouter } from "react-router-dom";
import type { User } from "../../api/auth";
import { EMPTY_FORM, actionToRow, fromForm, metricsOf, relaysOf, rowToAction, toForm } from "./builder";
import { describeScope, describeTrigger, type Rule } from "./service";

const user = vi.hoisted(() => ({ current: null as User | null }));
vi.mock("../../hooks/useAuth", () => ({ useUser: () => user.current }));
vi.mock("../../live/devices", async (importOriginal) => ({
  ...(await importOriginal<typeof import("../../live/devices")>()),
  useDevices: () => ({ rows: [], status: "ready", error: null }),
}));
vi.mock("../webhooks/service", () => ({ listWebhooks: vi.fn().mockResolvedValue([]) }));
const liveHandlers = vi.hoisted(() => new Map<string, (e: unknown) => void>());
vi.mock("../../hooks/useLive", () => ({
  useLiveEvents: (events: string[], _devices: string[], handler: (e: unknown) => void) => {
    for (const e of events) liveHandlers.set(e, handler);
  },
}));
vi.mock("./service", async (importOriginal) => ({
  ...(await importOriginal<typeof import("./service")>()),
  listRules: vi.fn(),
  listTemplates: vi.fn(),
  setRuleEnabled: vi.fn(),
  createRule: vi.fn(),
  replaceRule: vi.fn(),
  deleteRule: vi.fn(),
  dryRun: vi.fn(),
}));
const service = await import("./service");
const { default: RulesPage } = await import("./RulesPage");

const GAS: Rule = {
  id: 7,
  name: "Kitchen gas safety",
  description: "",
  enabled: true,
  scope: { devices: ["GASKITCHEN01"], tags: [], device_type: null },
  trigger: { type: "threshold", metric: "gas", op: "above", value: 400, hysteresis: 100, for_seconds: 0 },
  conditions: [],
  actions: [
    { type: "alert", when: "fire", severity: "critical", message: "Gas {value}", auto_clear: true },
    { type: "command", when: "clear", command: "relay", params: { name: "fan", state: "off" } },
  ],
  cooldown_seconds: 30,
  created_at: "2026-11-27T10:00:00Z",
  updated_at: "2026-11-27T10:00:00Z",
  last_fired_at: null,
  fire_count: 3,
};

function page() {
  return render(
    <App>
      <MemoryRouter>
        <RulesPage />
      </MemoryRouter>
    </App>,
  );
}

beforeEach(() => {
  vi.mocked(service.listRules).mockResolvedValue([GAS]);
  vi.mocked(service.listTemplates).mockResolvedValue([]);
});

describe("rule helpers", () => {
  it("describes triggers and scopes in words", () => {
    expect(describeTrigger(GAS.trigger)).toBe("gas above 400 (re-arms at 300)");
    expect(describeTrigger({ type: "offline", for_seconds: 600 })).toBe("offline for 600 s");
    expect(describeTrigger({ type: "schedule", at: "18:00", timezone: "Europe/Berlin" })).toBe("at 18:00 (Europe/Berlin)");
    expect(describeScope(GAS.scope)).toBe("GASKITCHEN01");
    expect(describeScope({})).toBe("all devices");
  });

  it("round-trips a rule through the builder form", () => {
    const body = fromForm(toForm(GAS));
    expect(body.trigger).toEqual(GAS.trigger);
    expect(body.actions).toEqual(GAS.actions);
    expect(body.scope?.devices).toEqual(["GASKITCHEN01"]);
    expect(body.cooldown_seconds).toBe(30);
  });

  it("builds other triggers and refuses broken JSON", () => {
    const offline = fromForm({ ...EMPTY_FORM, name: "x", trigger_type: "offline", for_seconds: 600 });
    expect(offline.trigger).toEqual({ type: "offline", for_seconds: 600 });
    const cron = fromForm({ ...EMPTY_FORM, name: "x", trigger_type: "schedule", cron: "0 18 * * *", timezone: "UTC" });
    expect(cron.trigger).toEqual({ type: "schedule", cron: "0 18 * * *", weekdays: [], timezone: "UTC" });
    expect(() => fromForm({ ...EMPTY_FORM, name: "x", advanced: true, actions: "[{" })).toThrow(/Actions: not valid JSON/);
    expect(() => fromForm({ ...EMPTY_FORM, name: "x", advanced: true, conditions: "{}" })).toThrow(/must be a JSON list/);
  });

  it("edits relay and servo commands as form rows, the rest as JSON rows", () => {
    const relay = actionToRow({ type: "command", when: "clear", device_id: "HALL01", command: "relay", params: { name: "fan", state: false } });
    expect(relay).toMatchObject({ type: "command", command: "relay", relay: "fan", state: "off", when: "clear", device_id: "HALL01" });
    expect(rowToAction(relay)).toEqual({ type: "command", when: "clear", device_id: "HALL01", command: "relay", params: { name: "fan", state: "off" } });
    const servo = actionToRow({ type: "command", command: "servo", params: { angle: 45 } });
    expect(rowToAction(servo)).toEqual({ type: "command", when: "fire", command: "servo", params: { angle: 45 } });
    const shadow = { type: "shadow" as const, when: "fire" as const, desired: { led: true } };
    const row = actionToRow(shadow);
    expect(row.type).toBe("json");
    expect(rowToAction(row)).toEqual(shadow);
    const byTag = { type: "command" as const, tags: ["hall"], command: "relay", params: { name: "fan", state: "on" } };
    expect(actionToRow(byTag).type).toBe("json");
    expect(() => rowToAction({ type: "command", command: "relay", relay: "" })).toThrow(/pick a relay/);
  });

  it("offers the metrics and relays the devices report", () => {
    const devices = [
      { id: "A", name: "Kitchen", capabilities: ["gas", "temperature", "relay:fan", "servo", "ota", "cmd:beep"], latest: { rssi: -60 } },
      { id: "B", name: "Hall", capabilities: ["humidity", "relay:light", "relay:fan"] },
    ];
    expect(metricsOf(devices)).toEqual(["gas", "humidity", "rssi", "temperature"]);
    expect(relaysOf(devices)).toEqual(["fan", "light"]);
  });
});

describe("RulesPage", () => {
  it("shows rules without mutating controls to viewers", async () => {
    user.current = { username: "v", role: "viewer", open: false };
    page();
    expect(await screen.findByText("Kitchen gas safety")).toBeInTheDocument();
    expect(screen.getByText("gas above 400 (re-arms at 300)")).toBeInTheDocument();
    expect(screen.queryByRole("switch")).toBeNull();
    expect(screen.queryByRole("button", { name: /New rule/ })).toBeNull();
    expect(screen.queryByRole("button", { name: "Edit" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Delete" })).toBeNull();
  });

  it("updates the fired count and last fired time live", async () => {
    user.current = { username: "v", role: "viewer", open: false };
    page();
    expect(await screen.findByTestId("fired-7")).toHaveTextContent("3");
    const ts = Date.now() / 1000;
    act(() => liveHandlers.get("rule_fired")!({ type: "rule_fired", device_id: "-", ts, payload: { rule_id: 7, fire_count: 4, last_fired_at: ts } }));
    expect(screen.getByTestId("fired-7")).toHaveTextContent("4");
    expect(screen.queryByText("never")).toBeNull();
  });

  it("lets an operator disable a rule", async () => {
    user.current = { username: "op", role: "operator", open: false };
    vi.mocked(service.setRuleEnabled).mockResolvedValue({ ...GAS, enabled: false });
    page();
    const toggle = await screen.findByRole("switch", { name: "enable Kitchen gas safety" });
    expect(toggle).toBeChecked();
    fireEvent.click(toggle);
    await waitFor(() => expect(service.setRuleEnabled).toHaveBeenCalledWith(7, false));
    await waitFor(() => expect(screen.getByRole("switch", { name: "enable Kitchen gas safety" })).not.toBeChecked());
  });

  it("dry-runs the rule in the builder and shows when it would have fired", async () => {
    user.current = { username: "admin", role: "admin", open: false };
    vi.mocked(service.dryRun).mockResolvedValue({
      since: "2026-11-26T10:00:00Z",
      until: "2026-11-27T10:00:00Z",
      samples: 4321,
      truncated: false,
      fired: 2,
      cleared: 1,
      firings: [
        { ts: "2026-11-27T09:00:00Z", kind: "fire", device_id: "GASKITCHEN01", context: { value: 650 } },
        { ts: "2026-11-27T09:01:00Z", kind: "clear", device_id: "GASKITCHEN01", context: { value: 120 } },
        { ts: "2026-11-27T09:30:00Z", kind: "fire", device_id: "GASKITCHEN01", context: { value: 480 } },
      ],
    });
    page();
    // Text queries: role queries over the builder's large DOM are slow in jsdom.
    fireEvent.click(await screen.findByText("Edit"));
    // The form holds the rule before the dry run validates it.
    await screen.findByDisplayValue("Kitchen gas safety", {}, { timeout: 20_000 });
    fireEvent.click(await screen.findByText("Dry run", {}, { timeout: 20_000 }));
    await waitFor(() => expect(service.dryRun).toHaveBeenCalled(), { timeout: 20_000 });
    const [body, hours] = vi.mocked(service.dryRun).mock.calls[0];
    expect(hours).toBe(24);
    expect(body.trigger).toEqual(GAS.trigger);
    expect(await screen.findByTestId("dry-run", {}, { timeout: 20_000 })).toHaveTextContent("fired 2 times");
    expect(screen.getByText("650")).toBeInTheDocument();
  }, 120_000);
});

// The rule builder's form values <-> a rule body. The trigger, the common conditions
// (metric, time, device) and the common actions (alert, relay/servo command, notify,
// webhook, clear alert) are form rows; anything else (shadow, other commands, command
// targets by tag) stays a JSON row, and the whole lists can be edited as JSON
// (docs/automations.md lists every field).
import type { RuleBody, Trigger } from "./service";

export type Condition = NonNullable<RuleBody["conditions"]>[number];
export type Action = RuleBody["actions"][number];

export const TRIGGER_TYPES: { value: Trigger["type"]; label: string }[] = [
  { value: "threshold", label: "Metric crosses a threshold" },
  { value: "rate", label: "Metric changes fast" },
  { value: "offline", label: "Device offline" },
  { value: "online", label: "Device back online" },
  { value: "registered", label: "Device registered" },
  { value: "schedule", label: "Schedule" },
  { value: "command_failed", label: "Command failed" },
  { value: "alert_raised", label: "Alert raised" },
];

/** Triggers whose state ends: only these run `when: clear` actions. */
export const CLEARABLE = new Set<Trigger["type"]>(["threshold", "rate", "offline"]);

export const COMPARE = [">", ">=", "<", "<=", "==", "!="] as const;
export const SEVERITIES = ["info", "warning", "critical"] as const;
export const RELAY_STATES = ["on", "off", "toggle"] as const;

export interface ConditionRow {
  type: "metric" | "time" | "device" | "json";
  device_id?: string | null;
  metric?: string;
  op?: string;
  value?: number | null;
  max_age_seconds?: number | null;
  after?: string;
  before?: string;
  weekdays?: number[];
  timezone?: string;
  tags?: string[];
  device_type?: string;
  json?: string;
}

export interface ActionRow {
  type: "alert" | "command" | "notify" | "webhook" | "clear_alert" | "json";
  when?: "fire" | "clear";
  severity?: string;
  message?: string;
  auto_clear?: boolean;
  level?: string;
  webhook_id?: number | null;
  device_id?: string | null; // command target; empty: the triggering device
  command?: "relay" | "servo";
  relay?: string;
  state?: string;
  angle?: number | null;
  json?: string;
}

export interface RuleForm {
  name: string;
  description: string;
  enabled: boolean;
  devices: string[];
  tags: string[];
  device_type: string;
  trigger_type: Trigger["type"];
  metric: string;
  op: string;
  value: number | null;
  hysteresis: number | null;
  for_seconds: number | null;
  at: string;
  cron: string;
  weekdays: number[];
  timezone: string;
  min_severity: string;
  cooldown_seconds: number;
  /** Conditions and actions as JSON lists instead of form rows. */
  advanced: boolean;
  conditionRows: ConditionRow[];
  actionRows: ActionRow[];
  conditions: string; // JSON array, when advanced
  actions: string; // JSON array, when advanced
}

const LOCAL_TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

export const NEW_CONDITION: Record<ConditionRow["type"], ConditionRow> = {
  metric: { type: "metric", device_id: null, metric: "", op: ">", value: null, max_age_seconds: 600 },
  time: { type: "time", after: "22:00", before: "06:00", weekdays: [], timezone: LOCAL_TZ },
  device: { type: "device", tags: [], device_type: "" },
  json: { type: "json", json: "{}" },
};

export const NEW_ACTION: Record<ActionRow["type"], ActionRow> = {
  alert: { type: "alert", when: "fire", severity: "warning", message: "{rule}: {device} {reading}", auto_clear: true },
  command: { type: "command", when: "fire", device_id: null, command: "relay", relay: "", state: "on", angle: 90 },
  notify: { type: "notify", when: "fire", level: "info", message: "{rule}: {device}" },
  webhook: { type: "webhook", when: "fire", webhook_id: null },
  clear_alert: { type: "clear_alert", when: "fire" },
  json: { type: "json", json: "{}" },
};

export const EMPTY_FORM: RuleForm = {
  name: "",
  description: "",
  enabled: true,
  devices: [],
  tags: [],
  device_type: "",
  trigger_type: "threshold",
  metric: "",
  op: "above",
  value: null,
  hysteresis: 0,
  for_seconds: 0,
  at: "",
  cron: "",
  weekdays: [],
  timezone: LOCAL_TZ,
  min_severity: "warning",
  cooldown_seconds: 60,
  advanced: false,
  conditionRows: [],
  actionRows: [{ ...NEW_ACTION.alert }],
  conditions: "[]",
  actions: "[]",
};

const json = (v: unknown) => JSON.stringify(v, null, 2);
const same = (keys: string[], allowed: string[]) => keys.every((k) => allowed.includes(k));

/** A condition as a form row; one the form has no fields for stays JSON. */
export function conditionToRow(c: Condition): ConditionRow {
  const keys = Object.keys(c);
  if (c.type === "metric" && same(keys, ["type", "device_id", "metric", "op", "value", "max_age_seconds"])) {
    return { ...NEW_CONDITION.metric, ...c, device_id: c.device_id ?? null };
  }
  if (c.type === "time" && same(keys, ["type", "after", "before", "weekdays", "timezone"])) {
    return { ...NEW_CONDITION.time, ...c, after: c.after ?? "", before: c.before ?? "", timezone: c.timezone ?? "UTC" };
  }
  if (c.type === "device") return { ...NEW_CONDITION.device, ...c, device_type: c.device_type ?? "" };
  return { type: "json", json: json(c) };
}

export function rowToCondition(r: ConditionRow): Condition {
  switch (r.type) {
    case "metric":
      return {
        type: "metric",
        ...(r.device_id ? { device_id: r.device_id } : {}),
        metric: r.metric ?? "",
        op: (r.op ?? ">") as (typeof COMPARE)[number],
        value: r.value ?? 0,
        max_age_seconds: r.max_age_seconds ?? 600,
      };
    case "time":
      return {
        type: "time",
        ...(r.after ? { after: r.after } : {}),
        ...(r.before ? { before: r.before } : {}),
        weekdays: r.weekdays ?? [],
        timezone: r.timezone || "UTC",
      };
    case "device":
      return { type: "device", tags: r.tags ?? [], device_type: r.device_type || null };
    default:
      return parseItem(r.json ?? "", "Condition") as Condition;
  }
}

/** An action as a form row; shadow, other commands, tag targets stay JSON. */
export function actionToRow(a: Action): ActionRow {
  const keys = Object.keys(a);
  const when = a.when ?? "fire";
  switch (a.type) {
    case "alert":
      return { ...NEW_ACTION.alert, ...a, when };
    case "notify":
      return { ...NEW_ACTION.notify, ...a, when };
    case "webhook":
      return { ...NEW_ACTION.webhook, ...a, when };
    case "clear_alert":
      if (a.rule_id == null) return { type: "clear_alert", when };
      break;
    case "command": {
      const p = (a.params ?? {}) as Record<string, unknown>;
      const plain = same(keys, ["type", "when", "device_id", "tags", "command", "params"]) && !(a.tags ?? []).length;
      const target = { when, device_id: a.device_id ?? null };
      if (plain && a.command === "relay" && same(Object.keys(p), ["name", "state"]) && typeof p.name === "string") {
        const state = typeof p.state === "boolean" ? (p.state ? "on" : "off") : String(p.state ?? "on");
        if ((RELAY_STATES as readonly string[]).includes(state)) {
          return { ...NEW_ACTION.command, ...target, command: "relay", relay: p.name, state };
        }
      }
      if (plain && a.command === "servo" && same(Object.keys(p), ["angle"]) && typeof p.angle === "number") {
        return { ...NEW_ACTION.command, ...target, command: "servo", angle: p.angle };
      }
      break;
    }
  }
  return { type: "json", json: json(a) };
}

export function rowToAction(r: ActionRow): Action {
  const when = r.when ?? "fire";
  switch (r.type) {
    case "alert":
      return {
        type: "alert",
        when,
        severity: (r.severity ?? "warning") as (typeof SEVERITIES)[number],
        message: r.message ?? "",
        auto_clear: r.auto_clear ?? true,
      };
    case "notify":
      return { type: "notify", when, level: (r.level ?? "info") as (typeof SEVERITIES)[number], message: r.message ?? "" };
    case "webhook":
      if (r.webhook_id == null) throw new Error("Webhook action: pick a webhook");
      return { type: "webhook", when, webhook_id: r.webhook_id };
    case "clear_alert":
      return { type: "clear_alert", when };
    case "command": {
      const target = r.device_id ? { device_id: r.device_id } : {};
      if (r.command === "servo") return { type: "command", when, ...target, command: "servo", params: { angle: r.angle ?? 90 } };
      if (!r.relay) throw new Error("Relay action: pick a relay");
      return { type: "command", when, ...target, command: "relay", params: { name: r.relay, state: r.state ?? "on" } };
    }
    default:
      return parseItem(r.json ?? "", "Action") as Action;
  }
}

export function toForm(rule: Partial<RuleBody>): RuleForm {
  const t = (rule.trigger ?? { type: "threshold" }) as Record<string, unknown> & { type: Trigger["type"] };
  const num = (k: string) => (typeof t[k] === "number" ? (t[k] as number) : null);
  const str = (k: string, d = "") => (typeof t[k] === "string" ? (t[k] as string) : d);
  const conditions = rule.conditions ?? [];
  const actions = rule.actions ?? [];
  return {
    ...EMPTY_FORM,
    name: rule.name ?? "",
    description: rule.description ?? "",
    enabled: rule.enabled ?? true,
    devices: rule.scope?.devices ?? [],
    tags: rule.scope?.tags ?? [],
    device_type: rule.scope?.device_type ?? "",
    trigger_type: t.type,
    metric: str("metric"),
    op: str("op", t.type === "rate" ? "rises" : "above"),
    value: num("value"),
    hysteresis: num("hysteresis"),
    for_seconds: num("for_seconds"),
    at: str("at"),
    cron: str("cron"),
    weekdays: Array.isArray(t.weekdays) ? (t.weekdays as number[]) : [],
    timezone: str("timezone", EMPTY_FORM.timezone),
    min_severity: str("min_severity", "info"),
    cooldown_seconds: rule.cooldown_seconds ?? 60,
    advanced: false,
    conditionRows: conditions.map(conditionToRow),
    actionRows: actions.map(actionToRow),
    conditions: json(conditions),
    actions: json(actions),
  };
}

function parseItem(text: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text || "{}");
  } catch (exc) {
    throw new Error(`${what}: not valid JSON (${String(exc)})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error(`${what}: must be a JSON object`);
  return value as Record<string, unknown>;
}

function parseList(text: string, what: string): unknown[] {
  let value: unknown;
  try {
    value = JSON.parse(text || "[]");
  } catch (exc) {
    throw new Error(`${what}: not valid JSON (${String(exc)})`);
  }
  if (!Array.isArray(value)) throw new Error(`${what}: must be a JSON list`);
  return value;
}

/** The form's conditions and actions as lists, from the rows or from the JSON. */
export function listsOf(f: RuleForm): { conditions: Condition[]; actions: Action[] } {
  if (f.advanced) {
    return {
      conditions: parseList(f.conditions, "Conditions") as Condition[],
      actions: parseList(f.actions, "Actions") as Action[],
    };
  }
  return { conditions: (f.conditionRows ?? []).map(rowToCondition), actions: (f.actionRows ?? []).map(rowToAction) };
}

function buildTrigger(f: RuleForm): Trigger {
  const n = (v: number | null | undefined) => (typeof v === "number" ? v : 0);
  switch (f.trigger_type) {
    case "threshold":
      return {
        type: "threshold",
        metric: f.metric,
        op: f.op === "below" ? "below" : "above",
        value: n(f.value),
        hysteresis: n(f.hysteresis),
        for_seconds: n(f.for_seconds),
      };
    case "rate":
      return { type: "rate", metric: f.metric, op: f.op === "falls" ? "falls" : "rises", value: n(f.value) };
    case "offline":
      return { type: "offline", for_seconds: n(f.for_seconds) };
    case "schedule":
      return {
        type: "schedule",
        ...(f.cron ? { cron: f.cron } : { at: f.at }),
        weekdays: f.weekdays,
        timezone: f.timezone || "UTC",
      } as Trigger;
    case "alert_raised":
      return { type: "alert_raised", min_severity: f.min_severity as "info" | "warning" | "critical" };
    default:
      return { type: f.trigger_type } as Trigger;
  }
}

/** Throws an Error with a readable message when a JSON part or a row is incomplete. */
export function fromForm(f: RuleForm): RuleBody {
  const { conditions, actions } = listsOf(f);
  return {
    name: f.name.trim(),
    description: f.description ?? "",
    enabled: f.enabled,
    scope: {
      devices: f.devices ?? [],
      tags: f.tags ?? [],
      device_type: f.device_type ? f.device_type : null,
    },
    trigger: buildTrigger(f),
    conditions,
    actions,
    cooldown_seconds: f.cooldown_seconds ?? 0,
  };
}

// ---- what the devices offer --------------------------------------------------------------

/** Capabilities that are commands or features, not metrics. */
const NOT_METRICS = new Set(["servo", "reboot", "ota", "automation", "webhook"]);

export interface DeviceOffer {
  id: string;
  name: string;
  capabilities: string[];
  latest?: Record<string, number>;
}

/** Metrics these devices report: their sensor capabilities and the metrics seen live. */
export function metricsOf(devices: DeviceOffer[]): string[] {
  const out = new Set<string>();
  for (const d of devices) {
    for (const c of d.capabilities) if (!c.includes(":") && !NOT_METRICS.has(c)) out.add(c);
    for (const m of Object.keys(d.latest ?? {})) out.add(m);
  }
  return [...out].sort();
}

/** Relay names (`relay:<name>` capabilities) of these devices. */
export function relaysOf(devices: DeviceOffer[]): string[] {
  const out = new Set<string>();
  for (const d of devices) for (const c of d.capabilities) if (c.startsWith("relay:")) out.add(c.slice(6));
  return [...out].sort();
}

export function hasServo(devices: DeviceOffer[]): boolean {
  return devices.some((d) => d.capabilities.includes("servo"));
}

/** The devices a part of the rule talks about: the picked ones, else every known one. */
export function pick(devices: DeviceOffer[], ids: (string | null | undefined)[]): DeviceOffer[] {
  const wanted = new Set(ids.filter((x): x is string => !!x));
  if (!wanted.size) return devices;
  return devices.filter((d) => wanted.has(d.id));
}

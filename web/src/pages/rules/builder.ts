// The rule builder's form values <-> a rule body. Trigger fields are form fields;
// conditions and actions are edited as JSON (docs/automations.md lists them).
import type { RuleBody, Trigger } from "./service";

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
  conditions: string; // JSON array
  actions: string; // JSON array
}

export const EMPTY_FORM: RuleForm = {
  name: "",
  description: "",
  enabled: true,
  devices: [],
  tags: [],
  device_type: "",
  trigger_type: "threshold",
  metric: "temperature",
  op: "above",
  value: 28,
  hysteresis: 2,
  for_seconds: 0,
  at: "",
  cron: "",
  weekdays: [],
  timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
  min_severity: "warning",
  cooldown_seconds: 60,
  conditions: "[]",
  actions: JSON.stringify([{ type: "alert", severity: "warning" }], null, 2),
};

export function toForm(rule: Partial<RuleBody>): RuleForm {
  const t = (rule.trigger ?? { type: "threshold" }) as Record<string, unknown> & { type: Trigger["type"] };
  const num = (k: string) => (typeof t[k] === "number" ? (t[k] as number) : null);
  const str = (k: string, d = "") => (typeof t[k] === "string" ? (t[k] as string) : d);
  return {
    ...EMPTY_FORM,
    name: rule.name ?? "",
    description: rule.description ?? "",
    enabled: rule.enabled ?? true,
    devices: rule.scope?.devices ?? [],
    tags: rule.scope?.tags ?? [],
    device_type: rule.scope?.device_type ?? "",
    trigger_type: t.type,
    metric: str("metric", EMPTY_FORM.metric),
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
    conditions: JSON.stringify(rule.conditions ?? [], null, 2),
    actions: JSON.stringify(rule.actions ?? [], null, 2),
  };
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

/** Throws an Error with a readable message when the JSON parts are not lists. */
export function fromForm(f: RuleForm): RuleBody {
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
    conditions: parseList(f.conditions, "Conditions") as RuleBody["conditions"],
    actions: parseList(f.actions, "Actions") as RuleBody["actions"],
    cooldown_seconds: f.cooldown_seconds ?? 0,
  };
}

// Automation rules (docs/automations.md): list, enable/disable, templates, dry run.
import { api, unwrap, type components } from "../../api/client";

export type Rule = components["schemas"]["RulePublic"];
export type RuleBody = components["schemas"]["RuleBody"];
export type Template = components["schemas"]["TemplatePublic"];
export type DryRun = components["schemas"]["DryRunPublic"];
export type Trigger = RuleBody["trigger"];

export async function listRules(): Promise<Rule[]> {
  return (await unwrap(api.GET("/api/rules"))).data;
}

export async function listTemplates(): Promise<Template[]> {
  return unwrap(api.GET("/api/rules/templates"));
}

export async function createRule(body: RuleBody): Promise<Rule> {
  return unwrap(api.POST("/api/rules", { body }));
}

export async function replaceRule(id: number, body: RuleBody): Promise<Rule> {
  return unwrap(api.PUT("/api/rules/{rule_id}", { params: { path: { rule_id: id } }, body }));
}

export async function setRuleEnabled(id: number, enabled: boolean): Promise<Rule> {
  return unwrap(api.PATCH("/api/rules/{rule_id}", { params: { path: { rule_id: id } }, body: { enabled } }));
}

export async function deleteRule(id: number): Promise<void> {
  await unwrap(api.DELETE("/api/rules/{rule_id}", { params: { path: { rule_id: id } } }));
}

/** When would this (possibly unsaved) rule have fired over the last `hours`? */
export async function dryRun(rule: RuleBody, hours: number): Promise<DryRun> {
  return unwrap(api.POST("/api/rules/dry-run", { body: { rule, hours } }));
}

/** A one-line, human description of a trigger ("gas above 400 (re-arms at 300)"). */
export function describeTrigger(t: Trigger): string {
  switch (t.type) {
    case "threshold": {
      const above = (t.op ?? "above") === "above";
      const h = t.hysteresis ?? 0;
      const rearm = h ? ` (re-arms at ${above ? t.value - h : t.value + h})` : "";
      const hold = t.for_seconds ? ` for ${t.for_seconds} s` : "";
      return `${t.metric} ${above ? "above" : "below"} ${t.value}${hold}${rearm}`;
    }
    case "rate":
      return `${t.metric} ${t.op ?? "rises"} faster than ${t.value}/min`;
    case "offline":
      return `offline for ${t.for_seconds ?? 0} s`;
    case "online":
      return "back online";
    case "registered":
      return "device registered";
    case "schedule": {
      const when = t.cron ? `cron ${t.cron}` : `at ${t.at ?? "?"}`;
      return `${when} (${t.timezone ?? "UTC"})`;
    }
    case "command_failed":
      return "command failed";
    case "alert_raised":
      return `alert raised (${t.min_severity ?? "info"}+)`;
    default:
      return "unknown trigger";
  }
}

/** Scope in words: "all devices", "Kitchen" (a device's name), "2 devices", "tags lights". */
export function describeScope(scope: RuleBody["scope"], names?: Map<string, string>): string {
  const parts: string[] = [];
  const one = scope?.devices?.[0];
  if (one !== undefined) parts.push(scope!.devices!.length === 1 ? (names?.get(one) ?? one) : `${scope!.devices!.length} devices`);
  if (scope?.tags?.length) parts.push(`tags ${scope.tags.join(", ")}`);
  if (scope?.device_type) parts.push(`type ${scope.device_type}`);
  return parts.length ? parts.join("; ") : "all devices";
}

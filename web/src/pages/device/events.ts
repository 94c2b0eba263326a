// The device's Events tab in words: what happened, why, and any extra fields as
// "name: value", instead of the stored JSON.

const REASONS: Record<string, string> = {
  status: "the device said so",
  last_will: "its connection dropped (last will)",
  timeout: "no report for several intervals",
  data: "a message arrived from it",
};

export interface EventText {
  title: string;
  level: "info" | "warning" | "critical";
  details: [string, string][];
}

function value(v: unknown): string {
  if (v === null || v === undefined) return "—";
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  return JSON.stringify(v);
}

function rest(data: Record<string, unknown>, skip: string[]): [string, string][] {
  return Object.entries(data)
    .filter(([k]) => !skip.includes(k))
    .map(([k, v]) => [k.replace(/_/g, " "), value(v)]);
}

export function describeEvent(type: string, data: Record<string, unknown>): EventText {
  if (type === "registered") return { title: "Registered: its first message arrived", level: "info", details: rest(data, []) };
  if (type === "status" || type === "device_status") {
    const status = value(data.status);
    const reason = typeof data.reason === "string" ? (REASONS[data.reason] ?? data.reason) : null;
    const was = data.previous ? ` (was ${value(data.previous)})` : "";
    return {
      title: `Went ${status}${was}${reason ? `: ${reason}` : ""}`,
      level: status === "offline" ? "warning" : "info",
      details: rest(data, ["status", "previous", "reason"]),
    };
  }
  if (type === "device_event") {
    const level = data.level === "warning" || data.level === "critical" ? data.level : "info";
    const name = value(data.event).replace(/_/g, " ");
    return { title: `Device reports: ${name}`, level, details: rest(data, ["event", "level", "ts"]) };
  }
  return { title: type.replace(/_/g, " "), level: "info", details: rest(data, []) };
}

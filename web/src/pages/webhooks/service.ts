// Webhooks (docs/automations.md): signed HTTP callbacks, secret shown once, test
// delivery, delivery log.
import { api, unwrap, type components } from "../../api/client";

export type Webhook = components["schemas"]["WebhookPublic"];
export type WebhookWithSecret = components["schemas"]["WebhookSecret"];
export type WebhookCreate = components["schemas"]["WebhookCreate"];
export type Delivery = components["schemas"]["DeliveryPublic"];

export const EVENT_TYPES: WebhookCreate["events"] = [
  "device_registered",
  "device_status",
  "alert",
  "command_update",
  "telemetry",
  "notification",
];

export type WebhooksPage = components["schemas"]["WebhooksPublic"];

export async function listWebhooks(): Promise<Webhook[]> {
  return (await listWebhooksPage()).data;
}

/** The list with whether LAN targets are accepted (the form explains it before sending). */
export async function listWebhooksPage(): Promise<WebhooksPage> {
  return unwrap(api.GET("/api/webhooks"));
}

/** A refused target (422) is shown under the URL field by the form, not as a pop-up. */
export async function createWebhook(body: WebhookCreate): Promise<WebhookWithSecret> {
  return unwrap(api.POST("/api/webhooks", { body }), { quiet: (e) => e.status === 422 });
}

export type UrlCheck = { error: string } | { lan: string | null };

const PRIVATE_V4: [number, number, number][] = [
  // [first octet, second-octet low, high] of loopback, private, link-local, CGNAT, "this" net
  [127, 0, 255],
  [10, 0, 255],
  [172, 16, 31],
  [192, 168, 168],
  [169, 254, 254],
  [100, 64, 127],
  [0, 0, 255],
];

/** Where a host lies: "this machine", "the local network", or null (the internet, as far
 * as its text tells). Names are resolved by the platform, which refuses at delivery time
 * a name that resolves to such an address unless private targets are allowed. */
export function lanKind(host: string): string | null {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (h === "localhost" || h.endsWith(".localhost") || h === "::1" || h.startsWith("127.")) return "this machine";
  const v4 = h.match(/^(\d{1,3})\.(\d{1,3})\.\d{1,3}\.\d{1,3}$/);
  if (v4) {
    const [a, b] = [Number(v4[1]), Number(v4[2])];
    return PRIVATE_V4.some(([first, lo, hi]) => a === first && b >= lo && b <= hi) ? "the local network" : null;
  }
  if (/^(fc|fd|fe8|fe9|fea|feb)[0-9a-f]*:/.test(h)) return "the local network";
  if (h.endsWith(".local") || h.endsWith(".lan") || h.endsWith(".home.arpa") || !h.includes(".")) return "the local network";
  return null;
}

/** The URL field's check, before anything is sent: the same rules as the platform's. */
export function checkWebhookUrl(text: string, privateAllowed: boolean): UrlCheck {
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    return { error: "Not a URL: write it in full, e.g. http://192.168.1.20:1880/iotp or https://example.com/hook" };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return { error: `The URL must start with http:// or https:// (not ${url.protocol}//)` };
  if (url.username || url.password) return { error: "Leave the user name and password out of the URL: deliveries are signed instead" };
  const lan = lanKind(url.hostname);
  if (lan && !privateAllowed) {
    return {
      error: `${url.hostname} is on ${lan}. This platform sends webhooks only to the internet unless an admin sets IOTP_WEBHOOK_ALLOW_PRIVATE=true (it guards the LAN against requests made in its name); then Node-RED or Home Assistant on the LAN work.`,
    };
  }
  return { lan };
}

export async function setWebhookEnabled(id: number, enabled: boolean): Promise<Webhook> {
  return unwrap(api.PATCH("/api/webhooks/{webhook_id}", { params: { path: { webhook_id: id } }, body: { enabled } }));
}

export async function deleteWebhook(id: number): Promise<void> {
  await unwrap(api.DELETE("/api/webhooks/{webhook_id}", { params: { path: { webhook_id: id } } }));
}

export async function rotateSecret(id: number): Promise<WebhookWithSecret> {
  return unwrap(api.POST("/api/webhooks/{webhook_id}/rotate-secret", { params: { path: { webhook_id: id } } }));
}

/** Sends a signed `test` event now; the result is the logged attempt. */
export async function testWebhook(id: number): Promise<Delivery> {
  return unwrap(api.POST("/api/webhooks/{webhook_id}/test", { params: { path: { webhook_id: id } } }));
}

export async function listDeliveries(id: number, limit = 50): Promise<{ data: Delivery[]; count: number }> {
  return unwrap(api.GET("/api/webhooks/{webhook_id}/deliveries", { params: { path: { webhook_id: id }, query: { limit } } }));
}

export const DELIVERY_COLOR: Record<string, string> = { delivered: "green", pending: "gold", failed: "red" };

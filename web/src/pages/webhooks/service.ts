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

export async function listWebhooks(): Promise<Webhook[]> {
  return (await unwrap(api.GET("/api/webhooks"))).data;
}

export async function createWebhook(body: WebhookCreate): Promise<WebhookWithSecret> {
  return unwrap(api.POST("/api/webhooks", { body }));
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

// Device MQTT credentials and provisioning requests (docs/security.md), admins only.
import { api, unwrap, type components } from "../../api/client";

export type Credential = components["schemas"]["CredentialPublic"];
export type CredentialIssued = components["schemas"]["CredentialIssued"];

// Every call here shows its own error on the page.
const quiet = { quiet: true };
const path = (device_id: string) => ({ params: { path: { device_id } } });

export async function listCredentials(): Promise<Credential[]> {
  return (await unwrap(api.GET("/api/credentials"), quiet)).data;
}

/** A pending device may connect with the secret it asked with. */
export async function approve(deviceId: string): Promise<Credential> {
  return unwrap(api.POST("/api/credentials/{device_id}/approve", path(deviceId)), quiet);
}

/** Issue or rotate: a new password, shown once; the old one stops working. */
export async function issue(deviceId: string): Promise<CredentialIssued> {
  return unwrap(api.POST("/api/credentials/{device_id}", path(deviceId)), quiet);
}

/** Revoke (also how a pending request is rejected): disconnected and refused. */
export async function revoke(deviceId: string): Promise<Credential> {
  return unwrap(api.POST("/api/credentials/{device_id}/revoke", path(deviceId)), quiet);
}

/** Forget: the device may ask (provision) again. */
export async function forget(deviceId: string): Promise<void> {
  await unwrap(api.DELETE("/api/credentials/{device_id}", path(deviceId)), quiet);
}

export const STATUS_COLOR: Record<string, string> = { pending: "gold", approved: "green", revoked: "red" };
/** No event tells of new provisioning requests: the page polls this often (ms). */
export const POLL_MS = 3000;

export type Pairing = components["schemas"]["PairingPublic"];

/** The fleet secret and whether the pairing window is open. */
export async function getPairing(): Promise<Pairing> {
  return unwrap(api.GET("/api/pairing"), quiet);
}

/** Provisioning devices are approved at once for the next ``minutes``. */
export async function openPairing(minutes: number): Promise<Pairing> {
  return unwrap(api.PUT("/api/pairing", { body: { minutes } }), quiet);
}

export async function closePairing(): Promise<Pairing> {
  return unwrap(api.DELETE("/api/pairing"), quiet);
}

// Users and API keys (docs/security.md), admins only.
import { api, unwrap, type components } from "../../api/client";
import type { Role } from "../../api/auth";

export type UserRow = components["schemas"]["UserPublic"];
export type UserCreate = components["schemas"]["UserCreate"];
export type ApiKey = components["schemas"]["ApiKeyPublic"];
export type ApiKeyCreated = components["schemas"]["ApiKeyCreated"];

export const ROLES: Role[] = ["viewer", "operator", "admin"];
export const ROLE_HELP: Record<Role, string> = {
  viewer: "reads everything, changes nothing",
  operator: "also controls devices: commands, settings, firmware, rules",
  admin: "also users, API keys and device credentials",
};

// Every call here shows its own error on the page (e.g. the last-admin guard).
const quiet = { quiet: true };

export async function listUsers(): Promise<UserRow[]> {
  return (await unwrap(api.GET("/api/users"), quiet)).data;
}

export async function createUser(body: UserCreate): Promise<UserRow> {
  return unwrap(api.POST("/api/users", { body }), quiet);
}

export async function updateUser(
  id: number,
  body: { role?: Role; password?: string; disabled?: boolean },
): Promise<UserRow> {
  return unwrap(api.PATCH("/api/users/{user_id}", { params: { path: { user_id: id } }, body }), quiet);
}

export async function deleteUser(id: number): Promise<void> {
  await unwrap(api.DELETE("/api/users/{user_id}", { params: { path: { user_id: id } } }), quiet);
}

export async function listApiKeys(): Promise<ApiKey[]> {
  return (await unwrap(api.GET("/api/api-keys"), quiet)).data;
}

export async function createApiKey(name: string, role: Role): Promise<ApiKeyCreated> {
  return unwrap(api.POST("/api/api-keys", { body: { name, role } }), quiet);
}

export async function revokeApiKey(id: number): Promise<ApiKey> {
  return unwrap(api.POST("/api/api-keys/{key_id}/revoke", { params: { path: { key_id: id } } }), quiet);
}

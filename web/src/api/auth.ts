// Tokens: POST /api/auth/token (OAuth2 password flow) gives {access_token,
// refresh_token, token_type, expires_in}; POST /api/auth/refresh {refresh_token} gives a
// new pair. A server that needs no login (no 401 without a token) is "open": the user
// then acts as admin.

export type Role = "admin" | "operator" | "viewer";
export interface Tokens {
  access: string;
  refresh?: string;
}
export interface User {
  username: string;
  role: Role;
  open: boolean; // open mode: the server needs no login
}

const KEY = "iotp.tokens";
type Listener = () => void;
const listeners = new Set<Listener>();
let tokens: Tokens | null = load();
let user: User | null = null;

function load(): Tokens | null {
  try {
    const raw = globalThis.localStorage?.getItem(KEY);
    return raw ? (JSON.parse(raw) as Tokens) : null;
  } catch {
    return null;
  }
}

function emit(): void {
  for (const l of listeners) l();
}

export function onAuthChange(l: Listener): () => void {
  listeners.add(l);
  return () => listeners.delete(l);
}

export function getTokens(): Tokens | null {
  return tokens;
}

export function setTokens(next: Tokens | null): void {
  tokens = next;
  if (next) localStorage.setItem(KEY, JSON.stringify(next));
  else localStorage.removeItem(KEY);
  emit();
}

export function getUser(): User | null {
  return user;
}

export function setUser(next: User | null): void {
  user = next;
  emit();
}

export function canControl(u: User | null): boolean {
  return u !== null && u.role !== "viewer";
}

/** Users, API keys and device credentials are for admins only. */
export function isAdmin(u: User | null): boolean {
  return u !== null && u.role === "admin";
}

/** Claims of a JWT, without verifying it (the server does that). */
export function jwtClaims(token: string): Record<string, unknown> {
  try {
    const part = token.split(".")[1] ?? "";
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(json) as Record<string, unknown>;
  } catch {
    return {};
  }
}

/** Seconds until the token expires (Infinity when it does not say). */
export function expiresIn(token: string, nowMs = Date.now()): number {
  const exp = jwtClaims(token).exp;
  return typeof exp === "number" ? exp - nowMs / 1000 : Infinity;
}

export function userFromToken(token: string, name?: string): User {
  const claims = jwtClaims(token);
  const role = claims.role;
  return {
    username: name ?? (typeof claims.name === "string" ? claims.name : "user"),
    role: role === "admin" || role === "operator" || role === "viewer" ? role : "viewer",
    open: false,
  };
}

async function tokenRequest(path: string, init: RequestInit): Promise<Tokens> {
  const response = await fetch(path, { method: "POST", ...init });
  if (!response.ok) {
    let detail = response.status === 404 ? "login is not available on this server" : "";
    try {
      const body = (await response.json()) as { detail?: unknown };
      if (typeof body.detail === "string" && response.status !== 404) detail = body.detail;
    } catch {
      /* not JSON */
    }
    throw new Error(detail || `login failed (HTTP ${response.status})`);
  }
  const body = (await response.json()) as { access_token: string; refresh_token?: string };
  return { access: body.access_token, refresh: body.refresh_token };
}

export async function login(username: string, password: string): Promise<User> {
  const next = await tokenRequest("/api/auth/token", {
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "password", username, password }),
  });
  setTokens(next);
  const u = userFromToken(next.access, username);
  setUser(u);
  return u;
}

export function logout(): void {
  setTokens(null);
  setUser(null);
}

let refreshing: Promise<boolean> | null = null;

/** Refresh the access token once, however many requests ask at the same time. */
export function refreshTokens(): Promise<boolean> {
  const current = tokens;
  if (!current?.refresh) return Promise.resolve(false);
  refreshing ??= tokenRequest("/api/auth/refresh", {
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: current.refresh }),
  })
    .then((next) => {
      setTokens({ access: next.access, refresh: next.refresh ?? current.refresh });
      return true;
    })
    .catch(() => false)
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

/** Refresh ahead of time when the access token is about to expire. */
export async function freshToken(marginSeconds = 30): Promise<string | undefined> {
  const current = tokens;
  if (current && expiresIn(current.access) < marginSeconds) await refreshTokens();
  return tokens?.access;
}

/** Called when the server says 401 and refreshing did not help. */
export function sessionExpired(): void {
  setTokens(null);
  setUser(null);
  const here = window.location.pathname + window.location.search;
  if (!window.location.pathname.startsWith("/login")) {
    window.location.assign(`/login?next=${encodeURIComponent(here)}`);
  }
}

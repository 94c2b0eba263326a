// Tokens: POST /api/auth/token (OAuth2 password flow) gives {access_token, csrf_token,
// expires_in}; the access token is kept in memory only. The refresh token is an httpOnly
// cookie that page scripts never see: POST /api/auth/refresh (the cookie, plus the CSRF
// token in X-CSRF-Token) gives a new access token, and replaces the cookie. After a
// reload the CSRF token is read back from its own cookie. A server that needs no login
// (no 401 without a token) is "open": the user then acts as admin.

export type Role = "admin" | "operator" | "viewer";
export interface Tokens {
  access: string;
}
export interface User {
  username: string;
  role: Role;
  open: boolean; // open mode: the server needs no login
}

const CSRF_COOKIE = "iotp_csrf";
type Listener = () => void;
const listeners = new Set<Listener>();
let tokens: Tokens | null = null;
let user: User | null = null;

/** The session's CSRF token, from its cookie (readable by this page only). */
function csrfToken(): string | null {
  const cookies = globalThis.document?.cookie ?? "";
  for (const part of cookies.split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === CSRF_COOKIE) return decodeURIComponent(value.join("="));
  }
  return null;
}

/** Whether a signed-in session may be resumed (its cookie is there). */
export function hasSession(): boolean {
  return csrfToken() !== null;
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
  const body = (await response.json()) as { access_token: string };
  return { access: body.access_token };
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

/** Ends the session on the server too (its refresh token is revoked). */
export async function logout(): Promise<void> {
  const csrf = csrfToken();
  setTokens(null);
  setUser(null);
  if (csrf) {
    await fetch("/api/auth/logout", { method: "POST", headers: { "X-CSRF-Token": csrf } }).catch(
      () => undefined,
    );
  }
}

let refreshing: Promise<boolean> | null = null;

async function exchange(): Promise<boolean> {
  const csrf = csrfToken();
  if (!csrf) return false;
  try {
    const next = await tokenRequest("/api/auth/refresh", { headers: { "X-CSRF-Token": csrf } });
    setTokens(next);
    return true;
  } catch {
    return false;
  }
}

/** Refresh the access token once, however many requests ask at the same time. Tabs
 * take turns (Web Locks): each refresh token is good once, and a second use of one
 * would end the session everywhere. */
export function refreshTokens(): Promise<boolean> {
  const locks = globalThis.navigator?.locks;
  refreshing ??= (async () => {
    try {
      return locks ? await locks.request("iotp-refresh", exchange) : await exchange();
    } finally {
      refreshing = null;
    }
  })();
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

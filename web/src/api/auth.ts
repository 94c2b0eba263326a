// Tokens (issue 5 contract): POST /api/auth/token with the OAuth2 password flow gives
// {access_token, refresh_token, token_type}; the same endpoint with
// grant_type=refresh_token refreshes. Without a token the server may be in open mode
// (no auth): then everything works without one and the user acts as admin.

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

export function userFromToken(token: string): User {
  const claims = jwtClaims(token);
  const role = claims.role;
  return {
    username: typeof claims.sub === "string" ? claims.sub : "user",
    role: role === "admin" || role === "operator" || role === "viewer" ? role : "viewer",
    open: false,
  };
}

async function tokenRequest(form: Record<string, string>): Promise<Tokens> {
  const response = await fetch("/api/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form),
  });
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
  const next = await tokenRequest({ grant_type: "password", username, password });
  setTokens(next);
  const u = userFromToken(next.access);
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
  refreshing ??= tokenRequest({ grant_type: "refresh_token", refresh_token: current.refresh })
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

/** Called when the server says 401 and refreshing did not help. */
export function sessionExpired(): void {
  setTokens(null);
  setUser(null);
  const here = window.location.pathname + window.location.search;
  if (!window.location.pathname.startsWith("/login")) {
    window.location.assign(`/login?next=${encodeURIComponent(here)}`);
  }
}

// The typed API client, generated from the OpenAPI schema (schema.gen.ts), plus the
// fetch that attaches the bearer token, refreshes it on 401, and sends the user to
// /login when that fails. `unwrap` routes every failure to the central error handler.
import createClient from "openapi-fetch";
import type { paths } from "./schema.gen";
import { getTokens, hasSession, refreshTokens, sessionExpired } from "./auth";
import { ApiError, detailOf, reportApiError } from "./errors";

export type { components, paths } from "./schema.gen";

export async function authFetch(input: Request): Promise<Response> {
  const retry = input.clone();
  const response = await fetch(withToken(input));
  if (response.status !== 401 || new URL(input.url).pathname.startsWith("/api/auth/")) {
    return response;
  }
  if (hasSession() && (await refreshTokens())) {
    const again = await fetch(withToken(retry));
    if (again.status !== 401) return again;
  }
  sessionExpired();
  return response;
}

function withToken(request: Request): Request {
  const token = getTokens()?.access;
  if (!token) return request;
  const headers = new Headers(request.headers);
  headers.set("Authorization", `Bearer ${token}`);
  return new Request(request, { headers });
}

export const api = createClient<paths>({
  baseUrl: globalThis.location?.origin ?? "http://localhost",
  fetch: (request: Request) => authFetch(request),
});

interface FetchResult<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

export interface UnwrapOptions {
  /** Don't show a message for this error (the caller shows its own state). */
  quiet?: boolean | ((error: ApiError) => boolean);
}

/** The data of a successful call; otherwise an ApiError, reported centrally. */
export async function unwrap<T>(
  call: Promise<FetchResult<T>>,
  options: UnwrapOptions = {},
): Promise<T> {
  let result: FetchResult<T>;
  try {
    result = await call;
  } catch (exc) {
    const error = new ApiError(0, `cannot reach the platform: ${String(exc)}`, "");
    if (!isQuiet(options, error)) reportApiError(error);
    throw error;
  }
  const { data, error: body, response } = result;
  if (response.ok) return data as T;
  const path = new URL(response.url || "http://x/").pathname;
  const error = new ApiError(response.status, detailOf(body, response.statusText), path);
  if (!isQuiet(options, error)) reportApiError(error);
  throw error;
}

function isQuiet(options: UnwrapOptions, error: ApiError): boolean {
  return typeof options.quiet === "function" ? options.quiet(error) : Boolean(options.quiet);
}

/** Quiet for endpoints that may not exist on this server yet. */
export const quietIfMissing = { quiet: (e: ApiError) => e.routeMissing };

// One central place that turns failed API calls into messages for the user.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly path: string,
  ) {
    super(status ? `${detail} (HTTP ${status})` : detail);
    this.name = "ApiError";
  }

  /** The route itself does not exist on this server (an endpoint still being built),
   * as opposed to a missing resource such as an unknown device. */
  get routeMissing(): boolean {
    return (this.status === 404 && this.detail === "Not Found") || this.status === 405;
  }
}

export type ErrorReporter = (error: ApiError) => void;

let reporter: ErrorReporter = (error) => console.error(error);
const recent = new Map<string, number>();
const DEDUP_MS = 4000;

export function setErrorReporter(fn: ErrorReporter): void {
  reporter = fn;
}

/** Report an error once per DEDUP_MS per message (polling must not flood toasts). */
export function reportApiError(error: ApiError): void {
  if (error.status === 401) return; // the auth layer redirects to /login
  const key = `${error.status}:${error.detail}`;
  const now = Date.now();
  if ((recent.get(key) ?? 0) > now - DEDUP_MS) return;
  recent.set(key, now);
  reporter(error);
}

/** FastAPI errors are {detail: string} or {detail: [{loc, msg}, ...]}. */
export function detailOf(body: unknown, fallback: string): string {
  if (body && typeof body === "object" && "detail" in body) {
    const detail = (body as { detail: unknown }).detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((d) => {
          const item = d as { loc?: unknown[]; msg?: string };
          const where = (item.loc ?? []).filter((p) => p !== "body").join(".");
          return where ? `${where}: ${item.msg ?? ""}` : (item.msg ?? "");
        })
        .join("; ");
    }
  }
  return fallback;
}

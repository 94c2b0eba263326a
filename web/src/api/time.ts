// Times on the page. The API and event payloads carry ISO 8601 (UTC); the live event
// envelope carries epoch seconds (eventIso turns it into the same). Every time shown
// is local, 24-hour: 2026-12-02 14:05:09.
import type { LiveEvent } from "../live/socket";

const pad = (n: number) => String(n).padStart(2, "0");

function toDate(t: string | number | Date): Date {
  return t instanceof Date ? t : new Date(t);
}

/** When the event happened, as ISO 8601. */
export function eventIso(event: Pick<LiveEvent, "ts">): string {
  return new Date(event.ts * 1000).toISOString();
}

export function formatDate(t: string | number | Date): string {
  const d = toDate(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** HH:mm (HH:mm:ss with seconds). */
export function formatClock(t: string | number | Date, seconds = true): string {
  const d = toDate(t);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return seconds ? `${hm}:${pad(d.getSeconds())}` : hm;
}

export function formatDateTime(t: string | number | Date): string {
  return `${formatDate(t)} ${formatClock(t)}`;
}

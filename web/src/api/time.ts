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

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const TICK_STEPS = [MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY];

/** A time axis over [fromMs, toMs]: at most `max` ticks on round times, each label distinct. */
export function timeAxis(fromMs: number, toMs: number, max = 7): { ticks: number[]; format: (t: number) => string } {
  const span = Math.max(toMs - fromMs, MINUTE);
  const step = TICK_STEPS.find((s) => span / s <= max) ?? TICK_STEPS[TICK_STEPS.length - 1]!;
  // Round in local time (a 6 h step starts at 00:00, 06:00, ... here, not in UTC).
  const offset = new Date(fromMs).getTimezoneOffset() * MINUTE;
  const first = Math.ceil((fromMs - offset) / step) * step + offset;
  const ticks: number[] = [];
  for (let t = first; t <= toMs; t += step) ticks.push(t);
  const format =
    step >= DAY
      ? (t: number) => formatDate(t).slice(5)
      : span > DAY
        ? (t: number) => `${formatDate(t).slice(5)} ${formatClock(t, false)}`
        : (t: number) => formatClock(t, false);
  return { ticks, format };
}

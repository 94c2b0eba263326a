// The Devices page's calls to the API.
import { api, unwrap } from "../../api/client";
import type { Device } from "../../live/devices";

export async function updateDevice(
  id: string,
  body: { name?: string; tags?: string[]; notes?: string },
): Promise<Device> {
  return unwrap(api.PATCH("/api/devices/{device_id}", { params: { path: { device_id: id } }, body }));
}

export async function deleteDevice(id: string): Promise<void> {
  await unwrap(api.DELETE("/api/devices/{device_id}", { params: { path: { device_id: id } } }));
}

export interface FilterState {
  q: string;
  status: string | null;
  type: string | null;
  tag: string | null;
}

export function matches(d: Device, f: FilterState): boolean {
  if (f.status && d.status !== f.status) return false;
  if (f.type && d.type !== f.type) return false;
  if (f.tag && !d.tags.includes(f.tag)) return false;
  if (f.q) {
    const q = f.q.toLowerCase();
    const hay = `${d.name}\n${d.id}\n${d.type ?? ""}\n${d.tags.join(" ")}\n${d.firmware_version ?? ""}`;
    if (!hay.toLowerCase().includes(q)) return false;
  }
  return true;
}

/** Run `fn` over items, `limit` at a time; per-item results in order. */
export async function mapLimited<T, R>(
  items: T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const out: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = { status: "fulfilled", value: await fn(items[i]!) };
      } catch (reason) {
        out[i] = { status: "rejected", reason };
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

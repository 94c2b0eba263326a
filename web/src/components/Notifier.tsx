// Toasts for what the user should notice: new devices, devices going online/offline,
// failed commands. Bursts are summarised (a broker restart must not pop 1,000 toasts).
import { useEffect, useRef } from "react";
import { App } from "antd";
import { useLiveEvents } from "../hooks/useLive";
import type { LiveEvent } from "../live/socket";

export const FLUSH_MS = 1000;
export const MAX_SINGLE = 3;

type Kind = "registered" | "online" | "offline" | "command_failed";
interface Item {
  kind: Kind;
  device: string;
  detail?: string;
}

const TITLES: Record<Kind, (n: number) => string> = {
  registered: (n) => (n === 1 ? "New device" : `${n} new devices`),
  online: (n) => (n === 1 ? "Device online" : `${n} devices online`),
  offline: (n) => (n === 1 ? "Device offline" : `${n} devices offline`),
  command_failed: (n) => (n === 1 ? "Command failed" : `${n} commands failed`),
};

export function classify(event: LiveEvent): Item | null {
  const p = event.payload as Record<string, unknown>;
  switch (event.type) {
    case "device_registered":
      return { kind: "registered", device: event.device_id, detail: String(p.name ?? "") };
    case "device_status":
      if (p.status === "online" || p.status === "offline") {
        return { kind: p.status, device: event.device_id, detail: String(p.reason ?? "") };
      }
      return null;
    case "command_update":
      if (p.status === "failed" || p.status === "timed_out") {
        return {
          kind: "command_failed",
          device: event.device_id,
          detail: `${String(p.command ?? "command")}: ${String(p.error ?? p.status)}`,
        };
      }
      return null;
    default:
      return null;
  }
}

export function Notifier() {
  const { notification } = App.useApp();
  const pending = useRef<Item[]>([]);
  useLiveEvents(["device_registered", "device_status", "command_update"], ["*"], (event) => {
    const item = classify(event);
    if (item) pending.current.push(item);
  });
  useEffect(() => {
    const timer = setInterval(() => {
      const items = pending.current;
      if (!items.length) return;
      pending.current = [];
      const byKind = new Map<Kind, Item[]>();
      for (const item of items) byKind.set(item.kind, [...(byKind.get(item.kind) ?? []), item]);
      for (const [kind, list] of byKind) {
        const type =
          kind === "command_failed" ? "error" : kind === "offline" ? "warning" : kind === "online" ? "success" : "info";
        if (list.length <= MAX_SINGLE) {
          for (const item of list) {
            notification[type]({
              message: TITLES[kind](1),
              description: item.detail ? `${item.device} · ${item.detail}` : item.device,
              placement: "bottomRight",
              duration: 4,
            });
          }
        } else {
          notification[type]({
            key: `burst:${kind}`,
            message: TITLES[kind](list.length),
            description: list
              .slice(0, 5)
              .map((i) => i.device)
              .join(", ") + (list.length > 5 ? ", …" : ""),
            placement: "bottomRight",
            duration: 4,
          });
        }
      }
    }, FLUSH_MS);
    return () => clearInterval(timer);
  }, [notification]);
  return null;
}

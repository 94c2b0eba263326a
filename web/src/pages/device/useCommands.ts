// Command history of one device with live status: command_update events over the
// WebSocket, polling GET /api/commands/{id} as a fallback for ones still open.
import { useCallback, useEffect, useRef, useState } from "react";
import { api, unwrap } from "../../api/client";
import { ApiError } from "../../api/errors";
import { useLiveEvents } from "../../hooks/useLive";
import { FINAL_STATES, listCommands, sendCommand, type Command } from "./service";

export const POLL_OPEN_MS = 1500;

export type Availability = "checking" | "available" | "missing";

export function mergeCommand(list: Command[], update: Partial<Command> & { id: string }): Command[] {
  const i = list.findIndex((c) => c.id === update.id);
  if (i === -1) return "command" in update && update.command ? [update as Command, ...list] : list;
  const next = list.slice();
  const merged = { ...list[i]!, ...update };
  // Never move a final command back to an open state (events may arrive out of order).
  if (FINAL_STATES.has(list[i]!.status) && !FINAL_STATES.has(merged.status)) merged.status = list[i]!.status;
  next[i] = merged;
  return next;
}

export function useCommands(deviceId: string) {
  const [commands, setCommands] = useState<Command[]>([]);
  const [availability, setAvailability] = useState<Availability>("checking");
  const [progress, setProgress] = useState<Record<string, { stage?: string; percent?: number }>>({});
  const ref = useRef(commands);
  ref.current = commands;

  useEffect(() => {
    let cancelled = false;
    listCommands(deviceId)
      .then((list) => {
        if (cancelled) return;
        if (list === null) setAvailability("missing");
        else {
          setAvailability("available");
          setCommands(list);
        }
      })
      .catch(() => !cancelled && setAvailability("available"));
    return () => {
      cancelled = true;
    };
  }, [deviceId]);

  useLiveEvents(
    ["command_update", "command_ack"],
    [deviceId],
    (event) => {
      const p = event.payload as Record<string, unknown>;
      const id = typeof p.id === "string" ? p.id : null;
      if (!id) return;
      if (event.type === "command_ack") {
        if (p.status === "progress") setProgress((old) => ({ ...old, [id]: (p.result ?? {}) as { stage?: string } }));
        return;
      }
      setCommands((list) => mergeCommand(list, p as Partial<Command> & { id: string }));
    },
    availability === "available",
  );

  // Fallback for missed events: poll open commands.
  useEffect(() => {
    if (availability !== "available") return undefined;
    const timer = setInterval(() => {
      for (const c of ref.current.filter((c) => !FINAL_STATES.has(c.status)).slice(0, 5)) {
        void unwrap(api.GET("/api/commands/{command_id}", { params: { path: { command_id: c.id } } }), { quiet: true })
          .then((fresh) => setCommands((list) => mergeCommand(list, fresh)))
          .catch(() => undefined);
      }
    }, POLL_OPEN_MS);
    return () => clearInterval(timer);
  }, [availability]);

  const send = useCallback(
    async (command: string, params: Record<string, unknown> = {}): Promise<Command | null> => {
      try {
        const created = await sendCommand(deviceId, command, params);
        setCommands((list) => mergeCommand(list.filter((c) => c.id !== created.id), created).concat().sort(byNewest));
        return created;
      } catch (exc) {
        if (exc instanceof ApiError && exc.routeMissing) setAvailability("missing");
        return null;
      }
    },
    [deviceId],
  );

  return { commands, availability, progress, send };
}

function byNewest(a: Command, b: Command): number {
  return Date.parse(b.created_at) - Date.parse(a.created_at);
}

import { useEffect, useRef, useSyncExternalStore } from "react";
import { live, type ConnectionState, type EventType, type LiveEvent } from "../live/socket";

/** Receive live events while the component is mounted. */
export function useLiveEvents(
  events: EventType[],
  devices: string[],
  handler: (event: LiveEvent) => void,
  enabled = true,
): void {
  const ref = useRef(handler);
  ref.current = handler;
  const eventsKey = events.join(",");
  const devicesKey = devices.join(",");
  useEffect(() => {
    if (!enabled) return undefined;
    return live.subscribe(
      eventsKey.split(",") as EventType[],
      devicesKey.split(","),
      (e) => ref.current(e),
    );
  }, [eventsKey, devicesKey, enabled]);
}

export function useConnectionState(): ConnectionState {
  return useSyncExternalStore(
    (l) => live.onState(l),
    () => live.state,
  );
}

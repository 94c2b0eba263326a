import { useEffect, useRef, useSyncExternalStore } from "react";
import { live, type ConnectionState, type EventType, type LiveEvent } from "../live/socket";

/**
 * Receive live events while the component is mounted. onLive runs each time the server
 * confirms the subscription (and again after a reconnect): load the list then.
 */
export function useLiveEvents(
  events: EventType[],
  devices: string[],
  handler: (event: LiveEvent) => void,
  enabled = true,
  onLive?: () => void,
): void {
  const ref = useRef(handler);
  ref.current = handler;
  const liveRef = useRef(onLive);
  liveRef.current = onLive;
  const eventsKey = events.join(",");
  const devicesKey = devices.join(",");
  useEffect(() => {
    if (!enabled) return undefined;
    return live.subscribe(
      eventsKey.split(",") as EventType[],
      devicesKey.split(","),
      (e) => ref.current(e),
      () => liveRef.current?.(),
    );
  }, [eventsKey, devicesKey, enabled]);
}

export function useConnectionState(): ConnectionState {
  return useSyncExternalStore(
    (l) => live.onState(l),
    () => live.state,
  );
}

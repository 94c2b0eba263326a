// One WebSocket for the whole app. Pages register interests ({events, devices}) and
// handlers; the socket subscribes to the union, resubscribes after every reconnect,
// and reconnects with capped exponential backoff. A page that loads a list and then
// follows it live passes onLive: it is called each time the server has confirmed a
// subscription covering the page's interest (first connect and every reconnect), from
// when on no event is missed, so the page loads again then and nothing falls between
// its load and its subscription, or into a disconnection.
import { freshToken, getTokens, refreshTokens, sessionExpired } from "../api/auth";
import type { components } from "./events.gen";

type Schemas = components["schemas"];
/** Every platform event type (iotp.protocol.events.EventType). */
export type EventType = Schemas["EventType"];

export interface LiveEvent<P = Record<string, unknown>> {
  type: EventType;
  device_id: string;
  ts: number;
  payload: P;
}

export type DataPayload = Schemas["DeviceDataPayload"];
/** A command or an alert as REST shows it too (times ISO 8601). */
export type CommandUpdatePayload = Schemas["CommandUpdatePayload"];
export type AlertPayload = Schemas["AlertPayload"];

export type ConnectionState = "connecting" | "open" | "closed";

interface Interest {
  events: EventType[];
  devices: string[]; // "*" for all
  handler: (event: LiveEvent) => void;
  onLive?: () => void;
  live: boolean;
}

export const RECONNECT_MIN_MS = 500;
export const RECONNECT_MAX_MS = 10_000;
export const PING_INTERVAL_MS = 25_000;

type SocketFactory = (url: string) => WebSocket;

interface Message {
  type?: string;
  device_id?: string;
  count?: number;
  events?: string[];
  devices?: string[];
}

export class LiveSocket {
  private ws: WebSocket | null = null;
  private interests = new Set<Interest>();
  private sent = { events: new Set<string>(), devices: new Set<string>() };
  /** What the server has confirmed ("subscribed"): events from then on are delivered. */
  private confirmed = { events: new Set<string>(), devices: new Set<string>() };
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private pinger: ReturnType<typeof setInterval> | null = null;
  private stateListeners = new Set<(s: ConnectionState) => void>();
  state: ConnectionState = "closed";
  dropped = 0;
  private stopped = true;

  constructor(
    private readonly url: () => string,
    private readonly factory: SocketFactory = (u) => new WebSocket(u),
  ) {}

  /** Register an interest; returns the function that removes it. */
  subscribe(
    events: EventType[],
    devices: string[],
    handler: (event: LiveEvent) => void,
    onLive?: () => void,
  ): () => void {
    const interest: Interest = { events, devices, handler, onLive, live: false };
    this.interests.add(interest);
    if (this.stopped) this.start();
    else this.sync();
    // Already covered by a confirmed subscription: live at once (after the caller
    // has finished registering).
    queueMicrotask(() => this.markLive());
    return () => {
      this.interests.delete(interest);
      this.sync();
    };
  }

  onState(listener: (s: ConnectionState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.ws?.close();
    this.ws = null;
    this.setState("closed");
  }

  /** Reconnect now (e.g. after login, when the token changed). */
  restart(): void {
    this.ws?.close();
  }

  private setState(state: ConnectionState): void {
    this.state = state;
    for (const l of this.stateListeners) l(state);
  }

  private connect(): void {
    if (this.stopped) return;
    this.setState("connecting");
    // A refused handshake looks like any other failure to a browser (code 1006), so
    // make sure the token is fresh before every attempt.
    void freshToken().finally(() => this.open());
  }

  private open(): void {
    if (this.stopped || this.ws) return;
    const ws = this.factory(this.url());
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.sent = { events: new Set(), devices: new Set() };
      this.confirmed = { events: new Set(), devices: new Set() };
      this.dropped = 0; // the server counts per connection
      this.setState("open");
      this.sync();
      this.pinger = setInterval(() => this.send({ action: "ping" }), PING_INTERVAL_MS);
    };
    ws.onmessage = (message) => this.dispatch(String(message.data));
    ws.onclose = (close) => {
      if (this.pinger) clearInterval(this.pinger);
      this.pinger = null;
      if (this.ws !== ws) return;
      this.ws = null;
      // Events sent while away are lost: every interest loads again when live again.
      this.confirmed = { events: new Set(), devices: new Set() };
      for (const i of this.interests) i.live = false;
      this.setState("closed");
      if (this.stopped) return;
      if (close.code === 1008 && close.reason === "revoked") {
        // The user was deleted or disabled, or their role or password changed: tokens
        // issued before no longer work, so a refresh fails and they sign in again.
        void refreshTokens().then((ok) => (ok ? this.connect() : sessionExpired()));
        return;
      }
      // 4401/1008: the server refused our token; refresh it before reconnecting.
      const authProblem = close.code === 4401 || close.code === 1008;
      const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.attempt);
      this.attempt += 1;
      const jittered = delay / 2 + Math.random() * (delay / 2);
      this.timer = setTimeout(() => {
        this.timer = null;
        if (authProblem) void refreshTokens().finally(() => this.connect());
        else this.connect();
      }, jittered);
    };
  }

  private dispatch(text: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return;
    }
    // A busy stream comes in batches: one frame, an array of events.
    if (Array.isArray(parsed)) parsed.forEach((m) => this.dispatchOne(m as Message));
    else this.dispatchOne(parsed as Message);
  }

  private dispatchOne(message: Message): void {
    if (message.type === "dropped") {
      const lost = (message.count ?? this.dropped) > this.dropped;
      this.dropped = message.count ?? this.dropped;
      // The server dropped events this client was too slow for: what the pages hold
      // may be stale, so those that load and follow load again.
      if (lost) for (const i of this.interests) if (i.live) this.callLive(i);
      return;
    }
    if (message.type === "subscribed") {
      this.confirmed = { events: new Set(message.events ?? []), devices: new Set(message.devices ?? []) };
      this.markLive();
      return;
    }
    if (!message.device_id) return; // pong / error
    const event = message as LiveEvent;
    for (const interest of this.interests) {
      if (
        interest.events.includes(event.type) &&
        (interest.devices.includes("*") || interest.devices.includes(event.device_id))
      ) {
        try {
          interest.handler(event);
        } catch (exc) {
          console.error("live event handler failed", exc);
        }
      }
    }
  }

  /** Tell each interest the confirmed subscription now covers that it is live. */
  private markLive(): void {
    const { events, devices } = this.confirmed;
    for (const i of this.interests) {
      if (i.live) continue;
      const covered =
        i.events.every((e) => events.has(e)) && (devices.has("*") || i.devices.every((d) => devices.has(d)));
      if (!covered) continue;
      i.live = true;
      this.callLive(i);
    }
  }

  private callLive(i: Interest): void {
    try {
      i.onLive?.();
    } catch (exc) {
      console.error("live subscription handler failed", exc);
    }
  }

  /** Make the server-side subscription equal to the union of all interests. */
  private sync(): void {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    const events = new Set<string>();
    const devices = new Set<string>();
    for (const i of this.interests) {
      i.events.forEach((e) => events.add(e));
      i.devices.forEach((d) => devices.add(d));
    }
    const removedEvents = [...this.sent.events].filter((e) => !events.has(e));
    const removedDevices = [...this.sent.devices].filter((d) => !devices.has(d));
    if (removedEvents.length || removedDevices.length) {
      // The hub removes events for all devices, and devices for all events (but keeps
      // "*" when the list is exactly ["*"]): reset, then subscribe to exactly what is
      // wanted. The extra name makes the list never exactly ["*"].
      this.send({
        action: "unsubscribe",
        events: [...this.sent.events],
        devices: [...this.sent.devices, "~reset"],
      });
      this.sent = { events: new Set(), devices: new Set() };
    }
    const addEvents = [...events].filter((e) => !this.sent.events.has(e));
    const addDevices = [...devices].filter((d) => !this.sent.devices.has(d));
    if (events.size && devices.size && (addEvents.length || addDevices.length)) {
      this.send({ action: "subscribe", events: [...events], devices: [...devices], batch: true });
      this.sent = { events, devices };
    }
  }

  private send(message: object): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }
}

export function liveUrl(): string {
  const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
  const token = getTokens()?.access;
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${proto}//${window.location.host}/api/ws${query}`;
}

export const live = new LiveSocket(liveUrl);

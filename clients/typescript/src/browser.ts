/**
 * The browser side: from the `url` your server got from `connect`, wait until the backend is
 * ready (the edge's status stream), open the WebSocket, reconnect it with backoff when it drops,
 * and say when the backend is gone for good so the app asks its server for a new URL.
 *
 *     const backend = new SessionBackend(url, { path: "ws" });
 *     backend.addEventListener("message", (e) => render((e as MessageEvent).data));
 *     backend.addEventListener("gone", () => askMyServerForANewUrl());
 *     await backend.ready();
 *     backend.send("hello");
 *
 * Events: `status` (detail: {status, reason}), `ready`, `open`, `message` (a MessageEvent),
 * `close` (detail: {code, reason}), and the three endings — `superseded` (another backend of the
 * key won; reconnecting here would reach nothing), `gone` (terminated: idle, lifetime, failed,
 * requested…), `revoked` (the token was revoked or expired) — after which nothing reconnects.
 */
import { Backoff } from "./backoff.js";

/** WebSocket close codes the edge sends when it ends a socket itself (sync/close_codes.py). */
export const CLOSE_SUPERSEDED = 4000;
export const CLOSE_REVOKED = 4001;

export type SessionStatus =
  | "connecting"
  | "scheduled"
  | "starting"
  | "ready"
  | "draining"
  | "terminated"
  | "superseded"
  | "gone"
  | "revoked"
  | "closed";

export type Ending = "superseded" | "gone" | "revoked" | "closed";

interface EventSourceLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: MessageEvent) => void): void;
  onerror: ((event: Event) => void) | null;
  close(): void;
}

interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((event: Event) => void) | null;
  onmessage: ((event: MessageEvent) => void) | null;
  onclose: ((event: CloseEvent) => void) | null;
  onerror: ((event: Event) => void) | null;
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
}

export interface SessionBackendOptions {
  /** Path of the WebSocket below the backend's URL, e.g. "ws" (default: the backend's root). */
  path?: string;
  protocols?: string | string[];
  /** The status stream; default: `<edge origin>/v1/status/<token>`, the token taken from `url`. */
  statusUrl?: string;
  /** Reconnect delays (full jitter) and how many reconnects in a row before giving up. */
  reconnect?: { initialMs?: number; maxMs?: number; attempts?: number };
  binaryType?: "blob" | "arraybuffer";
  /** Injection points (tests, non-browser runtimes); default: the globals. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocketLike;
  EventSource?: new (url: string) => EventSourceLike;
  fetch?: typeof fetch;
}

const CLOSED = 2; // EventSource.CLOSED
const OPEN = 1; // WebSocket.OPEN

/** `<origin>/v1/status/<token>` for a path-routed URL `<origin>/<token>/...`. */
export function statusUrlFor(url: string): string {
  const parsed = new URL(url);
  const token = parsed.pathname.split("/").filter(Boolean)[0];
  if (!token) throw new Error("the URL holds no connection token; pass options.statusUrl");
  return `${parsed.origin}/v1/status/${token}`;
}

/** The WebSocket URL of `path` below the backend's `url` (http → ws, https → wss). */
export function websocketUrlFor(url: string, path = ""): string {
  const target = new URL(path.replace(/^\/+/, ""), url.endsWith("/") ? url : url + "/");
  target.protocol = target.protocol === "https:" ? "wss:" : "ws:";
  return target.toString();
}

export class SessionBackend extends EventTarget {
  readonly url: string;
  status: SessionStatus = "connecting";
  socket: WebSocketLike | null = null;
  error: Error | null = null;

  private readonly options: SessionBackendOptions;
  private readonly backoff: Backoff;
  private readonly maxReconnects: number;
  private reconnects = 0;
  private stream: EventSourceLike | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private ended: Ending | null = null;
  private readonly readyPromise: Promise<void>;
  private settleReady!: { resolve: () => void; reject: (e: Error) => void };

  constructor(url: string, options: SessionBackendOptions = {}) {
    super();
    this.url = url;
    this.options = options;
    this.backoff = new Backoff({ initialMs: options.reconnect?.initialMs ?? 250, maxMs: options.reconnect?.maxMs ?? 10_000 });
    this.maxReconnects = options.reconnect?.attempts ?? 20;
    this.readyPromise = new Promise<void>((resolve, reject) => {
      this.settleReady = { resolve, reject };
    });
    this.readyPromise.catch(() => undefined); // callers who never await ready() see no unhandled rejection
    this.openStream();
  }

  /** Resolves once the WebSocket is open on a ready backend; rejects if the backend ends first. */
  ready(): Promise<void> {
    return this.readyPromise;
  }

  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
    if (!this.socket || this.socket.readyState !== OPEN) throw new Error("the WebSocket is not open");
    this.socket.send(data);
  }

  /** Stop: close the socket and the status stream; nothing reconnects. */
  close(): void {
    this.end("closed");
  }

  // ---- the status stream -------------------------------------------------------------------

  private openStream(): void {
    const EventSourceCtor = this.options.EventSource ?? (globalThis.EventSource as unknown as SessionBackendOptions["EventSource"]);
    if (!EventSourceCtor) throw new Error("no EventSource in this runtime; pass options.EventSource");
    let url: string;
    try {
      url = this.options.statusUrl ?? statusUrlFor(this.url);
    } catch (exc) {
      this.fail(exc as Error);
      return;
    }
    const stream = new EventSourceCtor(url);
    this.stream = stream;
    stream.addEventListener("status", (event) => this.onStatus(JSON.parse(String(event.data))));
    stream.addEventListener("revoked", () => this.end("revoked"));
    stream.onerror = () => {
      // EventSource reconnects by itself after a dropped stream; CLOSED means the edge refused it.
      if (stream.readyState === CLOSED && !this.ended) void this.whyRefused(url);
    };
  }

  private async whyRefused(url: string): Promise<void> {
    const fetchImpl = this.options.fetch ?? globalThis.fetch?.bind(globalThis);
    let status = 0;
    try {
      status = (await fetchImpl(url, { method: "GET" }).then((r) => (r.body?.cancel(), r))).status;
    } catch {
      status = 0;
    }
    if (this.ended) return;
    if (status === 401 || status === 403) this.end("revoked");
    else if (status === 404 || status === 410) this.end("gone");
    else this.timer = setTimeout(() => !this.ended && this.openStream(), this.backoff.nextDelayMs());
  }

  private onStatus(update: { status: string; reason?: string | null }): void {
    if (this.ended) return;
    const status = update.status as SessionStatus;
    this.status = status === "ready" && !this.socket ? "ready" : status;
    this.dispatchEvent(new CustomEvent("status", { detail: { status, reason: update.reason ?? null } }));
    if (status === "ready") {
      if (!this.socket && !this.timer) this.openSocket();
    } else if (status === "terminated") {
      this.end(update.reason === "superseded" ? "superseded" : "gone");
    }
  }

  // ---- the WebSocket -----------------------------------------------------------------------

  private openSocket(): void {
    this.timer = null;
    const WebSocketCtor = this.options.WebSocket ?? (globalThis.WebSocket as unknown as SessionBackendOptions["WebSocket"]);
    if (!WebSocketCtor) throw new Error("no WebSocket in this runtime; pass options.WebSocket");
    const socket = new WebSocketCtor(websocketUrlFor(this.url, this.options.path), this.options.protocols);
    socket.binaryType = this.options.binaryType ?? "blob";
    this.socket = socket;
    socket.onopen = () => {
      this.reconnects = 0;
      this.backoff.reset();
      this.dispatchEvent(new Event("open"));
      this.settleReady.resolve();
      this.dispatchEvent(new Event("ready"));
    };
    socket.onmessage = (event) => this.dispatchEvent(new MessageEvent("message", { data: event.data }));
    socket.onclose = (event) => this.onSocketClosed(socket, event.code, event.reason);
  }

  private onSocketClosed(socket: WebSocketLike, code: number, reason: string): void {
    if (this.socket !== socket) return;
    this.socket = null;
    this.dispatchEvent(new CustomEvent("close", { detail: { code, reason } }));
    if (this.ended) return;
    if (code === CLOSE_SUPERSEDED || reason === "superseded" || (code >= 4000 && code < 5000 && /supersed/i.test(reason))) {
      this.end("superseded");
      return;
    }
    if (code === CLOSE_REVOKED || reason === "revoked") {
      this.end("revoked"); // the token is refused now: reconnecting with it cannot work
      return;
    }
    if (this.reconnects >= this.maxReconnects) {
      this.fail(new Error(`the WebSocket closed ${this.reconnects} times in a row (last: ${code} ${reason})`));
      return;
    }
    // The status stream says whether the backend is gone; until it does, try again with backoff.
    this.reconnects += 1;
    this.timer = setTimeout(() => !this.ended && this.openSocket(), this.backoff.nextDelayMs());
  }

  // ---- endings -----------------------------------------------------------------------------

  private fail(error: Error): void {
    this.error = error;
    this.dispatchEvent(new CustomEvent("error", { detail: error }));
    this.end("closed");
  }

  private end(how: Ending): void {
    if (this.ended) return;
    this.ended = how;
    this.status = how;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.stream?.close();
    this.stream = null;
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, how);
    this.settleReady.reject(this.error ?? new Error(`backend ${how}`));
    this.dispatchEvent(new CustomEvent(how === "closed" ? "ended" : how, { detail: { how } }));
  }
}

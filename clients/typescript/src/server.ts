/**
 * The server side: ask Meridian for the backend of a key with an API token (never ship that token
 * to a browser), then hand the answer's `url` to the browser.
 *
 *     const conn = await connect({ url: "http://127.0.0.1:8700", token, key: "doc-42", template: "demo" });
 *     // send conn.url to the page; new SessionBackend(conn.url) there
 *
 * Uses the global `fetch` (Node 18+). 503 and 429 are retried with jittered backoff, never before
 * the answer's Retry-After; every error answer is a `MeridianError` with the server's code.
 */
import { Backoff, sleep } from "./backoff.js";
import { MeridianError, errorFromBody, parseRetryAfter } from "./errors.js";

export type BackendStatus = "scheduled" | "starting" | "ready" | "draining" | "terminated";

export interface Placement {
  region: string;
  reason: string;
  distance_km?: number | null;
  ranking?: Record<string, unknown>[] | null;
}

export interface Connection {
  backendId: string;
  key: string | null;
  spawned: boolean;
  status: BackendStatus;
  region: string;
  edgeUrl: string;
  /** The backend through its edge: `<edge>/<connection token>/`. */
  url: string;
  /** The connection token (also inside `url`). */
  token: string;
  /** Greater for every new backend of the key: pass it to your storage to fence off older ones. */
  fencingToken: number;
  statusUrl: string;
  placement: Placement;
  basePath: string | null;
  subdomainUrl: string | null;
  raw: Record<string, unknown>;
}

export interface Backend {
  id: string;
  key: string | null;
  template: string;
  region: string;
  status: BackendStatus;
  fencingToken: number;
  terminationReason: string | null;
  raw: Record<string, unknown>;
}

export interface RetryOptions {
  attempts?: number;
  initialMs?: number;
  maxMs?: number;
}

export interface ClientOptions {
  /** The control plane's URL (or an edge's: edges answer `connect` too). */
  url: string;
  /** An API token (scope `client` or `admin`). */
  token: string;
  retry?: RetryOptions;
  fetch?: typeof fetch;
}

export interface ConnectRequest {
  /** The key (document, room…); omit to always get a new backend. */
  key?: string | null;
  template: string;
  region?: string;
  location?: { lat: number; lon: number };
  /** The end user's IP address, for placement (admin and edge tokens only). */
  clientIp?: string;
  /** The end user the connection token is for (the backend sees it as `x-meridian-user`). */
  user?: string;
  signal?: AbortSignal;
}

const RETRIED = new Set([429, 503]);

function connectionFrom(d: Record<string, unknown>): Connection {
  return {
    backendId: String(d.backend_id),
    key: typeof d.key === "string" ? d.key : null,
    spawned: Boolean(d.spawned),
    status: d.status as BackendStatus,
    region: String(d.region),
    edgeUrl: String(d.edge_url),
    url: String(d.url),
    token: String(d.token),
    fencingToken: Number(d.fencing_token),
    statusUrl: String(d.status_url),
    placement: d.placement as Placement,
    basePath: typeof d.base_path === "string" ? d.base_path : null,
    subdomainUrl: typeof d.subdomain_url === "string" ? d.subdomain_url : null,
    raw: d,
  };
}

function backendFrom(d: Record<string, unknown>): Backend {
  return {
    id: String(d.id),
    key: typeof d.key === "string" ? d.key : null,
    template: String(d.template ?? ""),
    region: String(d.region ?? ""),
    status: d.status as BackendStatus,
    fencingToken: Number(d.fencing_token ?? 0),
    terminationReason: typeof d.termination_reason === "string" ? d.termination_reason : null,
    raw: d,
  };
}

export class MeridianClient {
  private readonly base: string;
  private readonly headers: Record<string, string>;
  private readonly retry: Required<RetryOptions>;
  private readonly fetch: typeof fetch;

  constructor({ url, token, retry = {}, fetch: fetchImpl }: ClientOptions) {
    this.base = url.replace(/\/+$/, "");
    this.headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
    this.retry = { attempts: 5, initialMs: 250, maxMs: 10_000, ...retry };
    this.fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
  }

  /** Any call; answered as parsed JSON, errors as `MeridianError`, 503/429 retried. */
  async request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<unknown> {
    const backoff = new Backoff({ initialMs: this.retry.initialMs, maxMs: this.retry.maxMs });
    for (let attempt = 1; ; attempt++) {
      const last = attempt >= this.retry.attempts;
      let resp: Response;
      try {
        resp = await this.fetch(this.base + path, {
          method,
          headers: this.headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal,
        });
      } catch (exc) {
        if (signal?.aborted) throw exc;
        if (last) throw new MeridianError("control_plane_unreachable", `cannot reach ${this.base}: ${exc}`, 0);
        await sleep(backoff.nextDelayMs(), signal);
        continue;
      }
      const retryAfter = parseRetryAfter(resp.headers.get("retry-after"));
      if (RETRIED.has(resp.status) && !last) {
        await resp.body?.cancel();
        await sleep(backoff.nextDelayMs(retryAfter), signal);
        continue;
      }
      const text = await resp.text();
      let parsed: unknown = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        parsed = null;
      }
      if (resp.status >= 400) throw errorFromBody(resp.status, parsed, retryAfter);
      return parsed;
    }
  }

  /** The key's live backend, or a new one placed near the user. */
  async connect(req: ConnectRequest): Promise<Connection> {
    const body: Record<string, unknown> = { template: req.template };
    if (req.key != null) body.key = req.key;
    if (req.region) body.region = req.region;
    if (req.location) body.location = req.location;
    if (req.clientIp) body.client_ip = req.clientIp;
    if (req.user) body.user = req.user;
    return connectionFrom((await this.request("POST", "/v1/connect", body, req.signal)) as Record<string, unknown>);
  }

  async backend(backendId: string): Promise<Backend> {
    return backendFrom((await this.request("GET", `/v1/backends/${encodeURIComponent(backendId)}`)) as Record<string, unknown>);
  }

  async terminate(backendId: string, { hard = false }: { hard?: boolean } = {}): Promise<Backend> {
    const path = `/v1/backends/${encodeURIComponent(backendId)}/terminate`;
    return backendFrom((await this.request("POST", path, { hard })) as Record<string, unknown>);
  }

  /** Revoke the connection tokens issued for the backend (for one user, or all): every edge refuses them within a second. */
  async revoke(backendId: string, { user }: { user?: string } = {}): Promise<Record<string, unknown>> {
    const path = `/v1/backends/${encodeURIComponent(backendId)}/revoke`;
    return (await this.request("POST", path, user === undefined ? {} : { user })) as Record<string, unknown>;
  }
}

/** One-shot `connect` with an API token. */
export async function connect(options: ClientOptions & ConnectRequest): Promise<Connection> {
  return new MeridianClient(options).connect(options);
}

export { MeridianError };

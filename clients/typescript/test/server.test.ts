import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { MeridianError } from "../src/errors.js";
import { MeridianClient, connect } from "../src/server.js";

type Answer = { status: number; body: unknown; headers?: Record<string, string> };
interface Seen {
  method: string;
  url: string;
  auth: string | undefined;
  body: unknown;
  at: number;
}

let server: Server | null = null;

/** A real HTTP server on loopback answering `answers` in turn (the last one repeats). */
async function serve(answers: Answer[]): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let raw = "";
    req.on("data", (chunk) => (raw += chunk));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", auth: req.headers.authorization, body: raw ? JSON.parse(raw) : null, at: Date.now() });
      const answer = answers[Math.min(seen.length - 1, answers.length - 1)]!;
      res.writeHead(answer.status, { "Content-Type": "application/json", ...answer.headers });
      res.end(JSON.stringify(answer.body));
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server!.address() as AddressInfo).port}`, seen };
}

afterEach(async () => {
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(null)));
  server = null;
});

const CONNECTED = {
  backend_id: "bk-1",
  key: "doc-1",
  spawned: true,
  status: "scheduled",
  region: "eu-west",
  edge_url: "http://edge",
  url: "http://edge/tok/",
  token: "tok",
  fencing_token: 3,
  status_url: "http://control/v1/backends/bk-1",
  placement: { region: "eu-west", reason: "location", distance_km: 12.5 },
  base_path: "/tok/",
};
const NO_CAPACITY = { error: { code: "no_capacity", message: "full", fields: {} } };

describe("connect", () => {
  it("sends the request with the API token and returns a typed connection", async () => {
    const { url, seen } = await serve([{ status: 200, body: CONNECTED }]);
    const conn = await connect({ url, token: "secret-token", key: "doc-1", template: "demo", location: { lat: 1, lon: 2 } });
    expect(conn).toMatchObject({ backendId: "bk-1", fencingToken: 3, url: "http://edge/tok/", basePath: "/tok/", subdomainUrl: null });
    expect(conn.placement.reason).toBe("location");
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ method: "POST", url: "/v1/connect", auth: "Bearer secret-token" });
    expect(seen[0]!.body).toEqual({ template: "demo", key: "doc-1", location: { lat: 1, lon: 2 } });
  });

  it("waits at least Retry-After before retrying a 503", async () => {
    const { url, seen } = await serve([
      { status: 503, body: NO_CAPACITY, headers: { "Retry-After": "1" } },
      { status: 200, body: CONNECTED },
    ]);
    const conn = await new MeridianClient({ url, token: "t", retry: { initialMs: 1, maxMs: 2 } }).connect({ key: "doc-1", template: "demo" });
    expect(conn.backendId).toBe("bk-1");
    expect(seen).toHaveLength(2);
    expect(seen[1]!.at - seen[0]!.at).toBeGreaterThanOrEqual(1000);
  });

  it("gives up after the last attempt with the server's error", async () => {
    const { url, seen } = await serve([{ status: 429, body: { error: { code: "too_many_requests", message: "slow down" } } }]);
    const client = new MeridianClient({ url, token: "t", retry: { attempts: 3, initialMs: 1, maxMs: 2 } });
    const err = await client.connect({ template: "demo" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MeridianError);
    expect((err as MeridianError).code).toBe("too_many_requests");
    expect(seen).toHaveLength(3);
  });

  it("does not retry other errors", async () => {
    const { url, seen } = await serve([{ status: 409, body: { error: { code: "key_held", message: "other template", fields: { key: "k" } } } }]);
    const err = (await connect({ url, token: "t", key: "k", template: "demo" }).catch((e: unknown) => e)) as MeridianError;
    expect([err.code, err.status, err.fields]).toEqual(["key_held", 409, { key: "k" }]);
    expect(seen).toHaveLength(1);
  });

  it("reports an unreachable server as control_plane_unreachable", async () => {
    const client = new MeridianClient({ url: "http://127.0.0.1:9", token: "t", retry: { attempts: 2, initialMs: 1, maxMs: 2 } });
    const err = (await client.backend("bk-1").catch((e: unknown) => e)) as MeridianError;
    expect(err.code).toBe("control_plane_unreachable");
  });
});

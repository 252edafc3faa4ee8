import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SessionBackend, statusUrlFor, websocketUrlFor } from "../src/browser.js";
import { FakeEventSource, FakeWebSocket, fakes, last, reset } from "./fakes.js";

const URL_ = "http://127.0.0.1:8701/tok.en-1/";

function session(options = {}) {
  const backend = new SessionBackend(URL_, { ...fakes, path: "ws", reconnect: { initialMs: 10, maxMs: 20 }, ...options });
  const seen: string[] = [];
  for (const name of ["status", "open", "ready", "message", "close", "superseded", "gone", "revoked", "error", "ended"]) {
    backend.addEventListener(name, () => seen.push(name));
  }
  return { backend, seen, stream: last(FakeEventSource.instances) };
}

beforeEach(() => {
  reset();
  vi.useFakeTimers();
});
afterEach(() => vi.useRealTimers());

describe("URLs", () => {
  it("derives the status stream and the WebSocket from the connect URL", () => {
    expect(statusUrlFor(URL_)).toBe("http://127.0.0.1:8701/v1/status/tok.en-1");
    expect(websocketUrlFor(URL_, "ws")).toBe("ws://127.0.0.1:8701/tok.en-1/ws");
    expect(websocketUrlFor("https://edge.example/t/", "/a/b")).toBe("wss://edge.example/t/a/b");
    expect(websocketUrlFor("https://edge.example/t")).toBe("wss://edge.example/t/");
  });
});

describe("SessionBackend", () => {
  it("waits for ready on the status stream before opening the WebSocket", async () => {
    const { backend, seen, stream } = session();
    expect(stream.url).toBe("http://127.0.0.1:8701/v1/status/tok.en-1");
    stream.emit("status", { status: "starting", reason: null });
    expect(FakeWebSocket.instances).toHaveLength(0);
    expect(backend.status).toBe("starting");
    stream.emit("status", { status: "ready", reason: null });
    const socket = last(FakeWebSocket.instances);
    expect(socket.url).toBe("ws://127.0.0.1:8701/tok.en-1/ws");
    socket.open();
    await backend.ready();
    backend.send("hi");
    socket.receive("echo");
    expect(socket.sent).toEqual(["hi"]);
    expect(seen).toEqual(["status", "status", "open", "ready", "message"]);
  });

  it("reconnects a dropped WebSocket with backoff while the backend is ready", async () => {
    const { backend, stream } = session();
    stream.emit("status", { status: "ready" });
    last(FakeWebSocket.instances).open();
    last(FakeWebSocket.instances).drop(1006);
    expect(FakeWebSocket.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(25);
    expect(FakeWebSocket.instances).toHaveLength(2);
    last(FakeWebSocket.instances).open();
    expect(backend.socket).toBe(last(FakeWebSocket.instances));
  });

  it("surfaces superseded from the WebSocket's close and stops", async () => {
    const { backend, seen, stream } = session();
    stream.emit("status", { status: "ready" });
    last(FakeWebSocket.instances).open();
    last(FakeWebSocket.instances).drop(4000, "superseded");
    await vi.advanceTimersByTimeAsync(1000);
    expect(backend.status).toBe("superseded");
    expect(seen).toContain("superseded");
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(stream.closed).toBe(true);
  });

  it("surfaces revoked from the WebSocket's close (4001 revoked) and never reconnects", async () => {
    const { backend, seen, stream } = session();
    stream.emit("status", { status: "ready" });
    last(FakeWebSocket.instances).open();
    last(FakeWebSocket.instances).drop(4001, "revoked");
    await vi.advanceTimersByTimeAsync(60_000);
    expect(backend.status).toBe("revoked");
    expect(seen).toContain("revoked");
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(stream.closed).toBe(true);
  });

  it("surfaces gone when the backend terminates, and superseded when that was the reason", async () => {
    const first = session();
    first.stream.emit("status", { status: "ready" });
    first.stream.emit("status", { status: "terminated", reason: "idle" });
    expect(first.backend.status).toBe("gone");
    expect(first.seen.at(-1)).toBe("gone");
    const second = session();
    second.stream.emit("status", { status: "terminated", reason: "superseded" });
    expect(second.backend.status).toBe("superseded");
    await expect(second.backend.ready()).rejects.toThrow("superseded");
  });

  it("surfaces revoked from the stream, and from a refused stream", async () => {
    const first = session();
    first.stream.emit("revoked", { backend_id: "bk-1" });
    expect(first.backend.status).toBe("revoked");
    const refusals: string[] = [];
    const second = session({ fetch: async (url: string) => (refusals.push(url), new Response("{}", { status: 401 })) });
    second.stream.refuse();
    await vi.advanceTimersByTimeAsync(0);
    expect(refusals).toEqual(["http://127.0.0.1:8701/v1/status/tok.en-1"]);
    expect(second.backend.status).toBe("revoked");
  });

  it("close() ends everything and nothing reconnects", async () => {
    const { backend, seen, stream } = session();
    stream.emit("status", { status: "ready" });
    const socket = last(FakeWebSocket.instances);
    socket.open();
    backend.close();
    expect(socket.closedWith).toEqual([1000, "closed"]);
    socket.drop(1000, "closed");
    await vi.advanceTimersByTimeAsync(1000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(seen.at(-1)).toBe("ended");
    expect(backend.status).toBe("closed");
  });
});

import { createElement } from "react";
import TestRenderer, { act } from "react-test-renderer";
import { beforeEach, describe, expect, it } from "vitest";
import type { SessionBackendOptions } from "../src/browser.js";
import { useBackend, type BackendState } from "../src/react.js";
import { FakeEventSource, FakeWebSocket, fakes, last, reset } from "./fakes.js";

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
const OPTIONS = fakes as unknown as SessionBackendOptions;

function Probe({ url, states }: { url: string | null; states: BackendState[] }) {
  states.push(useBackend(url, OPTIONS));
  return null;
}

beforeEach(reset);

describe("useBackend", () => {
  it("goes from connecting to ready with an open socket, and to gone", async () => {
    const states: BackendState[] = [];
    let renderer!: TestRenderer.ReactTestRenderer;
    await act(async () => {
      renderer = TestRenderer.create(createElement(Probe, { url: "http://edge/tok/", states }));
    });
    expect(states.at(-1)).toMatchObject({ status: "connecting", ready: false, socket: null });
    await act(async () => last(FakeEventSource.instances).emit("status", { status: "ready" }));
    await act(async () => last(FakeWebSocket.instances).open());
    expect(states.at(-1)).toMatchObject({ status: "ready", ready: true, error: null });
    expect(states.at(-1)!.socket).toBe(last(FakeWebSocket.instances));
    await act(async () => last(FakeEventSource.instances).emit("status", { status: "terminated", reason: "idle" }));
    expect(states.at(-1)).toMatchObject({ status: "gone", ready: false });
    expect(states.at(-1)!.error?.message).toContain("gone");
    await act(async () => renderer.unmount());
  });

  it("closes the session on unmount and is idle without a URL", async () => {
    const states: BackendState[] = [];
    let renderer!: TestRenderer.ReactTestRenderer;
    await act(async () => {
      renderer = TestRenderer.create(createElement(Probe, { url: null, states }));
    });
    expect(states.at(-1)!.status).toBe("idle");
    expect(FakeEventSource.instances).toHaveLength(0);
    await act(async () => renderer.update(createElement(Probe, { url: "http://edge/tok/", states })));
    const stream = last(FakeEventSource.instances);
    await act(async () => renderer.unmount());
    expect(stream.closed).toBe(true);
  });
});

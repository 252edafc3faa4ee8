import { describe, expect, it } from "vitest";
import { MeridianError, errorFromBody, parseRetryAfter } from "../src/errors.js";

describe("errors", () => {
  it("maps an error body to its code, message and fields", () => {
    const err = errorFromBody(409, { error: { code: "key_held", message: "held", fields: { key: "k" } } }, 3);
    expect(err).toBeInstanceOf(MeridianError);
    expect([err.code, err.message, err.status, err.fields, err.retryAfterS]).toEqual(["key_held", "held", 409, { key: "k" }, 3]);
  });

  it("turns unknown codes and unreadable bodies into internal", () => {
    expect(errorFromBody(500, { error: { code: "from_the_future", message: "x" } }).code).toBe("internal");
    expect(errorFromBody(502, "<html>").code).toBe("internal");
    expect(errorFromBody(502, null).message).toContain("HTTP 502");
  });

  it("reads Retry-After as seconds or as an HTTP date", () => {
    const now = Date.parse("2030-01-01T00:00:00Z");
    expect(parseRetryAfter("7")).toBe(7);
    expect(parseRetryAfter(new Date(now + 30_000).toUTCString(), now)).toBeCloseTo(30, 0);
    expect(parseRetryAfter(new Date(now - 30_000).toUTCString(), now)).toBe(0);
    for (const bad of [null, undefined, "", "soon", "-3"]) expect(parseRetryAfter(bad)).toBeNull();
  });
});

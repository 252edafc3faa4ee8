/** Error codes shared with the server (`sync/errors.py`; a test keeps the two lists equal). */
export const ERROR_CODES = [
  "bad_request",
  "unauthorized",
  "forbidden",
  "not_found",
  "conflict",
  "key_held",
  "no_capacity",
  "template_unknown",
  "executor_unavailable",
  "region_unknown",
  "payload_too_large",
  "snapshot_required",
  "too_many_requests",
  "database_unavailable",
  "control_plane_unreachable",
  "backend_gone",
  "backend_not_ready",
  "backend_unreachable",
  "node_mismatch",
  "internal",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** An error answer of the Meridian API (`{"error": {code, message, fields}}`), or an unreachable server. */
export class MeridianError extends Error {
  override readonly name = "MeridianError";

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly status: number,
    readonly fields: Record<string, unknown> = {},
    readonly retryAfterS: number | null = null,
  ) {
    super(message);
  }
}

function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && (ERROR_CODES as readonly string[]).includes(value);
}

/** The typed error a server sent; an unknown code or an unreadable body becomes `internal`. */
export function errorFromBody(status: number, body: unknown, retryAfterS: number | null = null): MeridianError {
  const err = typeof body === "object" && body !== null ? (body as { error?: unknown }).error : undefined;
  if (typeof err === "object" && err !== null) {
    const { code, message, fields } = err as { code?: unknown; message?: unknown; fields?: unknown };
    if (typeof code === "string") {
      return new MeridianError(
        isErrorCode(code) ? code : "internal",
        typeof message === "string" ? message : "",
        status,
        typeof fields === "object" && fields !== null ? (fields as Record<string, unknown>) : {},
        retryAfterS,
      );
    }
  }
  return new MeridianError("internal", `unexpected answer (HTTP ${status})`, status, {}, retryAfterS);
}

/** Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); null if absent or bad. */
export function parseRetryAfter(value: string | null | undefined, nowMs: number = Date.now()): number | null {
  if (!value) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  if (!/^[A-Za-z]{3}, /.test(trimmed)) return null; // an IMF-fixdate, e.g. "Wed, 21 Oct 2015 07:28:00 GMT"
  const when = Date.parse(trimmed);
  if (Number.isNaN(when)) return null;
  return Math.max(0, (when - nowMs) / 1000);
}

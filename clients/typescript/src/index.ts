export { ERROR_CODES, MeridianError, errorFromBody, parseRetryAfter, type ErrorCode } from "./errors.js";
export { Backoff } from "./backoff.js";
export {
  MeridianClient,
  connect,
  type Backend,
  type BackendStatus,
  type ClientOptions,
  type Connection,
  type ConnectRequest,
  type Placement,
  type RetryOptions,
} from "./server.js";
export {
  CLOSE_REVOKED,
  CLOSE_SUPERSEDED,
  SessionBackend,
  statusUrlFor,
  websocketUrlFor,
  type Ending,
  type SessionBackendOptions,
  type SessionStatus,
} from "./browser.js";

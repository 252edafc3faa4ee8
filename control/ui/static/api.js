// Talking to the control plane: the token lives in this tab's sessionStorage and travels only in
// the Authorization header, never in a URL or a cookie.
const TOKEN_KEY = "meridian.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  // What a person should read when this happens.
  get explanation() {
    if (this.status === 401) return "That token was not accepted: it is unknown, revoked or mistyped.";
    if (this.status === 403) return "This token has neither the admin nor the observer scope.";
    return this.message;
  }

  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

export function headers(extra = {}) {
  return { Authorization: `Bearer ${token() ?? ""}`, ...extra };
}

export async function failure(response) {
  let code = "error";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    // not an API error body: keep the status line
  }
  return new ApiError(response.status, code, message);
}

export async function call(method, path, body, signal) {
  const init = { method, headers: headers(), signal, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response.json();
}

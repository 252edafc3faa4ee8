/**
 * `useBackend(url)`: a React hook over `SessionBackend` — the backend's status, whether it is
 * ready, its open WebSocket and the error that ended it. A new `url` (e.g. after `gone`, from
 * your server) replaces the session; unmounting closes it.
 */
import { useEffect, useState } from "react";
import { SessionBackend, type SessionBackendOptions, type SessionStatus } from "./browser.js";

export interface BackendState {
  status: SessionStatus | "idle";
  ready: boolean;
  socket: WebSocket | null;
  error: Error | null;
  backend: SessionBackend | null;
}

const IDLE: BackendState = { status: "idle", ready: false, socket: null, error: null, backend: null };

export function useBackend(url: string | null | undefined, options?: SessionBackendOptions): BackendState {
  const [state, setState] = useState<BackendState>(IDLE);
  useEffect(() => {
    if (!url) {
      setState(IDLE);
      return;
    }
    const backend = new SessionBackend(url, options);
    const update = () =>
      setState({
        status: backend.status,
        ready: backend.status === "ready" && backend.socket !== null && backend.socket.readyState === 1,
        socket: backend.socket as WebSocket | null,
        error: backend.error ?? (["gone", "revoked", "superseded"].includes(backend.status) ? new Error(`backend ${backend.status}`) : null),
        backend,
      });
    for (const name of ["status", "open", "close", "superseded", "gone", "revoked", "error", "ended"]) {
      backend.addEventListener(name, update);
    }
    update();
    return () => backend.close();
    // options are read once per url: pass a stable object (or none)
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [url]);
  return state;
}

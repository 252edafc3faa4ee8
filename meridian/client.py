"""Meridian's Python client, async (`AsyncMeridian`) and sync (`Meridian`), built on httpx.

    async with AsyncMeridian("http://127.0.0.1:8700", token) as api:
        conn = await api.connect("doc-42", "demo")
        await api.wait_ready(conn, timeout=30)
        # give conn.url to the browser

Error answers become the exceptions of `sync.errors` (`KeyHeld`, `NoCapacity`, ...: all
`MeridianError`); a server that cannot be reached is `ControlPlaneUnreachable`. 503 and 429 are
retried with jittered exponential backoff, never sooner than the answer's `Retry-After`.
Only httpx and the standard library are needed (no server packages).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Generic, TypeVar

import httpx

from meridian.client_types import (
    LIVE_STATUSES,
    ApiToken,
    Backend,
    Connection,
    Placement,
    Region,
    StatusEvent,
    Template,
)
from meridian.sse import SseParser
from sync.backoff import Backoff
from sync.close_codes import CLOSE_REVOKED, CLOSE_SUPERSEDED, REASON_REVOKED, REASON_SUPERSEDED
from sync.errors import (
    BackendGone,
    ControlPlaneUnreachable,
    DatabaseUnavailable,
    MeridianError,
    TooManyRequests,
    error_from_body,
)

T = TypeVar("T")
BackendRef = str | Connection | Backend | StatusEvent
RETRIED_STATUSES = frozenset({429, 503})
# What breaks a status stream without saying anything about the backend: resumed, not raised.
STREAM_INTERRUPTIONS: tuple[type[MeridianError], ...] = (ControlPlaneUnreachable, DatabaseUnavailable, TooManyRequests)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently 503/429 answers (and refused connections) are retried."""

    attempts: int = 5
    initial_s: float = 0.25
    max_s: float = 10.0

    def delay(self, backoff: Backoff, retry_after_s: float | None) -> float:
        """Full-jitter backoff, but never before the server's Retry-After (plus up to 20% jitter,
        so clients told the same Retry-After do not all come back in the same instant)."""
        jittered = backoff.next_delay()
        if retry_after_s is None:
            return jittered
        return max(jittered, retry_after_s * (1 + 0.2 * random.random()))


NO_RETRY = RetryPolicy(attempts=1)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its answer; the same for the async and the sync client."""

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: Mapping[str, str | int] | None = None


def _error(resp: httpx.Response) -> MeridianError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    return error_from_body(resp.status_code, body, parse_retry_after(resp.headers.get("retry-after")))


def _answer(call: Call[T], resp: httpx.Response) -> T:
    if resp.status_code >= 400:
        raise _error(resp)
    return call.parse(resp.json() if resp.content else None)


def _unreachable(base_url: httpx.URL, exc: httpx.TransportError) -> ControlPlaneUnreachable:
    return ControlPlaneUnreachable(f"cannot reach {base_url}: {type(exc).__name__}")


def _backend_id(backend: BackendRef) -> str:
    if isinstance(backend, Connection):
        return backend.backend_id
    if isinstance(backend, StatusEvent):
        return backend.backend_id
    if isinstance(backend, Backend):
        return backend.id
    return backend


def _backend_url(backend: BackendRef) -> str:
    """A connection names its backend's status URL (on the control plane, even when `connect` was
    answered by an edge, which has no status stream); anything else is asked of this client's server."""
    if isinstance(backend, Connection) and backend.status_url.startswith(("http://", "https://")):
        return backend.status_url.rstrip("/")
    return f"/v1/backends/{_backend_id(backend)}"


def _ready_or_gone(backend_id: str, status: str, reason: str | None) -> bool:
    """True once ready; raises BackendGone when the backend will never be ready."""
    if status == "ready":
        return True
    if status not in LIVE_STATUSES:
        raise BackendGone(
            f"backend {backend_id} is {status}" + (f" ({reason})" if reason else ""),
            fields={"status": status, "reason": reason},
        )
    return False


def _now_ready(backend: Backend, event: StatusEvent) -> Backend:
    return dataclasses.replace(backend, status="ready", status_changed_at=event.at)


def _status_event(parser: SseParser, line: str) -> StatusEvent | None:
    sse = parser.feed(line)
    if sse is None or sse.event != "status" or sse.id is None:
        return None
    return StatusEvent.from_json(int(sse.id), json.loads(sse.data))


def _events_headers(last_event_id: int | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return headers


def _list(parse: Callable[[dict[str, Any]], T]) -> Callable[[Any], list[T]]:
    return lambda body: [parse(item) for item in body]


def _raw(body: Any) -> Any:
    return body


# ---- the calls, shared by both clients ---------------------------------------------------------


class _Calls:
    @staticmethod
    def connect(
        key: str | None,
        template: str,
        *,
        region: str | None = None,
        location: tuple[float, float] | None = None,
        client_ip: str | None = None,
        user: str | None = None,
        explain: bool = False,
    ) -> Call[Connection]:
        body: dict[str, Any] = {"template": template}
        for name, value in (("key", key), ("region", region), ("client_ip", client_ip), ("user", user)):
            if value is not None:
                body[name] = value
        if location is not None:
            body["location"] = {"lat": location[0], "lon": location[1]}
        params = {"explain": "true"} if explain else None
        return Call("POST", "/v1/connect", Connection.from_json, json=body, params=params)

    @staticmethod
    def backend(backend: BackendRef) -> Call[Backend]:
        return Call("GET", _backend_url(backend), Backend.from_json)

    @staticmethod
    def backends(
        *, key: str | None = None, region: str | None = None, status: str | None = None, limit: int | None = None
    ) -> Call[list[Backend]]:
        params = {n: v for n, v in (("key", key), ("region", region), ("status", status), ("limit", limit)) if v}
        return Call("GET", "/v1/backends", _list(Backend.from_json), params=params)

    @staticmethod
    def terminate(backend: BackendRef, *, hard: bool = False) -> Call[Backend]:
        return Call("POST", f"/v1/backends/{_backend_id(backend)}/terminate", Backend.from_json, json={"hard": hard})

    @staticmethod
    def revoke(backend: BackendRef, *, user: str | None = None) -> Call[dict[str, Any]]:
        body = {"user": user} if user is not None else {}
        return Call("POST", f"/v1/backends/{_backend_id(backend)}/revoke", dict, json=body)

    @staticmethod
    def templates() -> Call[list[Template]]:
        return Call("GET", "/v1/templates", _list(Template.from_json))

    @staticmethod
    def put_template(name: str, spec: Mapping[str, Any]) -> Call[Template]:
        return Call("PUT", f"/v1/templates/{name}", Template.from_json, json=dict(spec))

    @staticmethod
    def regions() -> Call[list[Region]]:
        return Call("GET", "/v1/regions", _list(Region.from_json))

    @staticmethod
    def put_region(name: str, lat: float, lon: float, edge_url: str, capacity: int | None = None) -> Call[Region]:
        body: dict[str, Any] = {"lat": lat, "lon": lon, "edge_url": edge_url}
        if capacity is not None:
            body["capacity"] = capacity
        return Call("PUT", f"/v1/regions/{name}", Region.from_json, json=body)

    @staticmethod
    def create_token(name: str, scopes: list[str], **restrictions: Any) -> Call[ApiToken]:
        return Call("POST", "/v1/tokens", ApiToken.from_json, json={"name": name, "scopes": scopes, **restrictions})

    @staticmethod
    def health() -> Call[dict[str, Any]]:
        return Call("GET", "/healthz", dict)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


# ---- async ------------------------------------------------------------------------------------


class AsyncMeridian:
    """The async client. `url` is the control plane's (or an edge's: edges answer `connect` too)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=_headers(token), timeout=timeout_s, transport=transport
        )

    async def __aenter__(self) -> AsyncMeridian:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        backoff = Backoff(self.retry.initial_s, self.retry.max_s)
        for attempt in range(1, self.retry.attempts + 1):
            last = attempt == self.retry.attempts
            try:
                resp = await self._http.request(call.method, call.path, json=call.json, params=call.params)
            except httpx.ConnectError as exc:  # nothing was sent: safe to try again
                if last:
                    raise _unreachable(self._http.base_url, exc) from exc
                await asyncio.sleep(self.retry.delay(backoff, None))
                continue
            except httpx.TransportError as exc:
                raise _unreachable(self._http.base_url, exc) from exc
            if resp.status_code in RETRIED_STATUSES and not last:
                await asyncio.sleep(self.retry.delay(backoff, parse_retry_after(resp.headers.get("retry-after"))))
                continue
            return _answer(call, resp)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def request(self, method: str, path: str, *, json: Any = None, params: Any = None) -> Any:
        """Any API call, answered as raw JSON (errors still typed, 503/429 still retried)."""
        return await self._send(Call(method, path, _raw, json=json, params=params))

    async def connect(
        self,
        key: str | None,
        template: str,
        *,
        region: str | None = None,
        location: tuple[float, float] | None = None,
        client_ip: str | None = None,
        user: str | None = None,
        explain: bool = False,
    ) -> Connection:
        """The key's live backend, or a new one placed near the user (`key=None`: always a new one)."""
        return await self._send(
            _Calls.connect(
                key, template, region=region, location=location, client_ip=client_ip, user=user, explain=explain
            )
        )

    async def backend(self, backend: BackendRef) -> Backend:
        return await self._send(_Calls.backend(backend))

    async def backends(
        self, *, key: str | None = None, region: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[Backend]:
        return await self._send(_Calls.backends(key=key, region=region, status=status, limit=limit))

    async def terminate(self, backend: BackendRef, *, hard: bool = False) -> Backend:
        return await self._send(_Calls.terminate(backend, hard=hard))

    async def revoke(self, backend: BackendRef, *, user: str | None = None) -> dict[str, Any]:
        return await self._send(_Calls.revoke(backend, user=user))

    async def templates(self) -> list[Template]:
        return await self._send(_Calls.templates())

    async def put_template(self, name: str, spec: Mapping[str, Any]) -> Template:
        return await self._send(_Calls.put_template(name, spec))

    async def regions(self) -> list[Region]:
        return await self._send(_Calls.regions())

    async def put_region(self, name: str, lat: float, lon: float, edge_url: str, capacity: int | None = None) -> Region:
        return await self._send(_Calls.put_region(name, lat, lon, edge_url, capacity))

    async def create_token(self, name: str, scopes: list[str], **restrictions: Any) -> ApiToken:
        return await self._send(_Calls.create_token(name, scopes, **restrictions))

    async def health(self) -> dict[str, Any]:
        return await self._send(_Calls.health())

    async def events(self, backend: BackendRef, *, last_event_id: int | None = None) -> AsyncIterator[StatusEvent]:
        """The backend's status events (history first, then live); ends after `terminated`."""
        path = _backend_url(backend) + "/events"
        req = self._http.build_request("GET", path, headers=_events_headers(last_event_id), timeout=None)
        try:
            resp = await self._http.send(req, stream=True)
        except httpx.TransportError as exc:
            raise _unreachable(self._http.base_url, exc) from exc
        try:
            if resp.status_code >= 400:
                await resp.aread()
                raise _error(resp)
            parser = SseParser()
            async for line in resp.aiter_lines():
                event = _status_event(parser, line)
                if event is not None:
                    yield event
        except httpx.TransportError as exc:
            raise _unreachable(self._http.base_url, exc) from exc
        finally:
            await resp.aclose()

    async def wait_ready(self, backend: BackendRef, timeout: float = 30.0) -> Backend:  # noqa: ASYNC109
        """The backend once it is ready; `BackendGone` if it drains or terminates first, `TimeoutError`
        after `timeout` seconds. Its current status first, then its status stream; a broken stream is
        resumed from the last event seen (`Last-Event-ID`), so no change is missed."""
        last_id: int | None = None
        backoff = Backoff(self.retry.initial_s, self.retry.max_s)
        async with asyncio.timeout(timeout):
            current = await self.backend(backend)
            if _ready_or_gone(current.id, current.status, current.termination_reason):
                return current
            while True:
                retry_after: float | None = None
                try:
                    async for event in self.events(backend, last_event_id=last_id):
                        last_id = event.id
                        if _ready_or_gone(event.backend_id, event.status, event.reason):
                            return _now_ready(current, event)
                        backoff.reset()
                except STREAM_INTERRUPTIONS as exc:
                    retry_after = exc.retry_after_s
                await asyncio.sleep(self.retry.delay(backoff, retry_after))


# ---- sync -------------------------------------------------------------------------------------


class Meridian:
    """The synchronous client: the same calls as `AsyncMeridian`, blocking."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers=_headers(token), timeout=timeout_s, transport=transport
        )

    def __enter__(self) -> Meridian:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        backoff = Backoff(self.retry.initial_s, self.retry.max_s)
        for attempt in range(1, self.retry.attempts + 1):
            last = attempt == self.retry.attempts
            try:
                resp = self._http.request(call.method, call.path, json=call.json, params=call.params)
            except httpx.ConnectError as exc:
                if last:
                    raise _unreachable(self._http.base_url, exc) from exc
                time.sleep(self.retry.delay(backoff, None))
                continue
            except httpx.TransportError as exc:
                raise _unreachable(self._http.base_url, exc) from exc
            if resp.status_code in RETRIED_STATUSES and not last:
                time.sleep(self.retry.delay(backoff, parse_retry_after(resp.headers.get("retry-after"))))
                continue
            return _answer(call, resp)
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, *, json: Any = None, params: Any = None) -> Any:
        """Any API call, answered as raw JSON (errors still typed, 503/429 still retried)."""
        return self._send(Call(method, path, _raw, json=json, params=params))

    def connect(
        self,
        key: str | None,
        template: str,
        *,
        region: str | None = None,
        location: tuple[float, float] | None = None,
        client_ip: str | None = None,
        user: str | None = None,
        explain: bool = False,
    ) -> Connection:
        """The key's live backend, or a new one placed near the user (`key=None`: always a new one)."""
        return self._send(
            _Calls.connect(
                key, template, region=region, location=location, client_ip=client_ip, user=user, explain=explain
            )
        )

    def backend(self, backend: BackendRef) -> Backend:
        return self._send(_Calls.backend(backend))

    def backends(
        self, *, key: str | None = None, region: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[Backend]:
        return self._send(_Calls.backends(key=key, region=region, status=status, limit=limit))

    def terminate(self, backend: BackendRef, *, hard: bool = False) -> Backend:
        return self._send(_Calls.terminate(backend, hard=hard))

    def revoke(self, backend: BackendRef, *, user: str | None = None) -> dict[str, Any]:
        return self._send(_Calls.revoke(backend, user=user))

    def templates(self) -> list[Template]:
        return self._send(_Calls.templates())

    def put_template(self, name: str, spec: Mapping[str, Any]) -> Template:
        return self._send(_Calls.put_template(name, spec))

    def regions(self) -> list[Region]:
        return self._send(_Calls.regions())

    def put_region(self, name: str, lat: float, lon: float, edge_url: str, capacity: int | None = None) -> Region:
        return self._send(_Calls.put_region(name, lat, lon, edge_url, capacity))

    def create_token(self, name: str, scopes: list[str], **restrictions: Any) -> ApiToken:
        return self._send(_Calls.create_token(name, scopes, **restrictions))

    def health(self) -> dict[str, Any]:
        return self._send(_Calls.health())

    def events(
        self, backend: BackendRef, *, last_event_id: int | None = None, timeout_s: float | None = None
    ) -> Iterator[StatusEvent]:
        """The backend's status events (history first, then live); ends after `terminated`.
        `timeout_s` bounds the wait for each next byte (httpx.ReadTimeout beyond it)."""
        path = _backend_url(backend) + "/events"
        headers = _events_headers(last_event_id)
        try:
            with self._http.stream("GET", path, headers=headers, timeout=httpx.Timeout(timeout_s)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error(resp)
                parser = SseParser()
                for line in resp.iter_lines():
                    event = _status_event(parser, line)
                    if event is not None:
                        yield event
        except httpx.TimeoutException:
            raise
        except httpx.TransportError as exc:
            raise _unreachable(self._http.base_url, exc) from exc

    def wait_ready(self, backend: BackendRef, timeout: float = 30.0) -> Backend:
        """The backend once it is ready; `BackendGone` if it drains or terminates first, `TimeoutError`
        after `timeout` seconds; a broken stream is resumed with `Last-Event-ID`."""
        deadline = time.monotonic() + timeout
        last_id: int | None = None
        backoff = Backoff(self.retry.initial_s, self.retry.max_s)

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"backend {_backend_id(backend)} was not ready within {timeout:g}s")
            return left

        current = self.backend(backend)
        if _ready_or_gone(current.id, current.status, current.termination_reason):
            return current
        while True:
            retry_after: float | None = None
            try:
                for event in self.events(backend, last_event_id=last_id, timeout_s=remaining()):
                    last_id = event.id
                    if _ready_or_gone(event.backend_id, event.status, event.reason):
                        return _now_ready(current, event)
                    backoff.reset()
            except httpx.TimeoutException:
                pass
            except STREAM_INTERRUPTIONS as exc:
                retry_after = exc.retry_after_s
            time.sleep(min(self.retry.delay(backoff, retry_after), remaining()))


def websocket_ending(code: int, reason: str) -> str | None:
    """What a close frame from the edge means for a client of the backend, the way the TypeScript
    `SessionBackend` reads it: "superseded" (4000: connect again, the key has another backend),
    "revoked" (4001: the token is refused; connect again only if the user may still have access),
    or None (anything else: reconnect with backoff while the backend is ready)."""
    if code == CLOSE_SUPERSEDED or reason == REASON_SUPERSEDED:
        return REASON_SUPERSEDED
    if code == CLOSE_REVOKED or reason == REASON_REVOKED:
        return REASON_REVOKED
    return None


__all__ = [
    "CLOSE_REVOKED",
    "CLOSE_SUPERSEDED",
    "ApiToken",
    "AsyncMeridian",
    "Backend",
    "Connection",
    "Meridian",
    "MeridianError",
    "Placement",
    "Region",
    "RetryPolicy",
    "StatusEvent",
    "Template",
    "parse_retry_after",
    "websocket_ending",
]

"""Typed async client of the control plane's sync endpoints (`changes`, `snapshot`), over aiohttp.

Every failure leaves this module as a typed error:
- an error answer becomes the exception its code names (sync/errors.py: SnapshotRequired for 410,
  TooManyRequests for 429 with its Retry-After, ...);
- a transport failure (refused, reset, timed out, DNS) becomes ControlPlaneUnreachable;
- an answer that is malformed, truncated or not what the protocol says becomes ProtocolError.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple

import aiohttp
import orjson
import pydantic

from sync.discovery import ControlEndpoints, SrvEndpoints, endpoints_for, with_failover
from sync.errors import ControlPlaneUnreachable, ErrorCode, MeridianError, error_from_body
from sync.models import ChangeKind, ChangesReply
from sync.timing import CONTROL_CLIENT_KEEPALIVE_S

MAX_LINE_BYTES = 16 << 20
"""Longest NDJSON line accepted in a snapshot (one object); longer means a broken stream."""


class ProtocolError(MeridianError):
    """The control plane answered something the sync protocol does not allow (malformed, truncated)."""

    code, status = ErrorCode.INTERNAL, 502


class SnapshotObject(NamedTuple):
    kind: ChangeKind
    id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class ClientTimeouts:
    connect_s: float = 5.0
    """Opening a connection."""
    changes_margin_s: float = 10.0
    """How long a `changes` call may take beyond the wait it asked for (a hung server is given up on)."""
    snapshot_read_s: float = 30.0
    """Longest silence within a snapshot stream."""


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@contextlib.contextmanager
def _transport(what: str) -> Iterator[None]:
    try:
        yield
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ControlPlaneUnreachable(f"{what}: {type(exc).__name__}: {exc}") from exc


async def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 300:
        return
    retry_after = _retry_after(resp.headers.get("Retry-After"))
    raw = await resp.read()
    try:
        body: object = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if body is None and resp.status in (502, 503, 504):  # a proxy in front, not the control plane
        raise ControlPlaneUnreachable(f"HTTP {resp.status} without an error body", retry_after_s=retry_after)
    raise error_from_body(resp.status, body, retry_after)


class Snapshot:
    """An open snapshot stream: its header, then its objects (iterate `objects()` once, to the end)."""

    def __init__(self, epoch: str, version: int, kinds: list[str], lines: AsyncIterator[bytes]) -> None:
        self.epoch = epoch
        self.version = version
        self.kinds = kinds
        self._lines = lines
        self._consumed = False
        self.count = 0

    async def objects(self) -> AsyncIterator[SnapshotObject]:
        """Each object in turn. Ends normally only after the end line confirmed the count: a
        truncated or malformed stream raises ProtocolError (or ControlPlaneUnreachable) instead,
        so a consumer that commits only after the loop never commits half a snapshot."""
        if self._consumed:
            raise RuntimeError("a snapshot's objects can be read once")
        self._consumed = True
        async for line in self._lines:
            item = _parse_line(line)
            if isinstance(item, SnapshotObject):
                self.count += 1
                yield item
                continue
            if item != self.count:
                raise ProtocolError(f"snapshot ended after {self.count} objects but says it holds {item}")
            async for extra in self._lines:
                if extra.strip():
                    raise ProtocolError("data after the end of the snapshot")
            return
        raise ProtocolError(f"snapshot truncated after {self.count} objects (no end line)")


def _parse_line(line: bytes) -> SnapshotObject | int:
    """An object line, or the count of the end line."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"snapshot line is not JSON: {line[:80]!r}") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("snapshot line is not an object")
    if raw.get("end") is True:
        count = raw.get("count")
        if not isinstance(count, int) or isinstance(count, bool):
            raise ProtocolError("snapshot end line without a count")
        return count
    kind, object_id, body = raw.get("kind"), raw.get("id"), raw.get("body")
    if not isinstance(object_id, str) or not isinstance(body, dict):
        raise ProtocolError(f"snapshot object without id or body: {line[:80]!r}")
    try:
        return SnapshotObject(ChangeKind(str(kind)), object_id, body)
    except ValueError as exc:
        raise ProtocolError(f"snapshot object of unknown kind {kind!r}") from exc


def _parse_header(line: bytes) -> tuple[str, int, list[str]]:
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("snapshot header is not JSON") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("snapshot header is not an object")
    epoch, version, kinds = raw.get("epoch"), raw.get("version"), raw.get("kinds")
    if not isinstance(epoch, str) or not epoch or not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("snapshot header needs an epoch and a version")
    if version < 0 or not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise ProtocolError("snapshot header has a bad version or kinds")
    return epoch, version, kinds


async def _lines(content: aiohttp.StreamReader, max_line_bytes: int) -> AsyncGenerator[bytes, None]:
    """NDJSON lines of a body (own splitter: aiohttp's readline caps lines at 128 KiB)."""
    rest = b""
    with _transport("snapshot stream broke"):
        async for chunk in content.iter_any():
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            if len(rest) > max_line_bytes:
                raise ProtocolError(f"snapshot line longer than {max_line_bytes} bytes")
            for part in parts:
                if part.strip():
                    yield part
    if rest.strip():
        yield rest


class SyncClient:
    """`changes` and `snapshot` of the control plane. `base_url` is a URL (`http(s)://`,
    `dns+srv://`) or endpoints shared with other clients; a `changes` call whose control plane
    does not answer moves on to the next endpoint at once. Pass a session to share it; otherwise
    the client opens one on first use and closes it in `close()`."""

    def __init__(
        self,
        base_url: str | ControlEndpoints,
        token: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeouts: ClientTimeouts | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self._endpoints = endpoints_for(base_url) if isinstance(base_url, str) else base_url
        self._owns_endpoints = isinstance(base_url, str)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session = session
        self._owns_session = session is None
        self.timeouts = timeouts or ClientTimeouts()
        self._max_line_bytes = max_line_bytes

    def use_token(self, token: str) -> None:
        """Switch to another token for the next calls (an edge's own, once it enrolled)."""
        self._headers = {"Authorization": f"Bearer {token}"}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(keepalive_timeout=CONTROL_CLIENT_KEEPALIVE_S)
            )
        return self._session

    @property
    def base_url(self) -> str:
        """The control plane this client prefers now (the first that answered)."""
        return self._endpoints.preferred

    async def changes(self, since: int, wait_s: float) -> ChangesReply:
        """Changes after `since`, waiting up to `wait_s` seconds for some."""
        return await with_failover(self._endpoints, lambda base: self._changes(base, since, wait_s))

    async def _changes(self, base_url: str, since: int, wait_s: float) -> ChangesReply:
        t = self.timeouts
        timeout = aiohttp.ClientTimeout(total=wait_s + t.changes_margin_s, sock_connect=t.connect_s)
        url = f"{base_url}/v1/sync/changes"
        with _transport("changes request failed"):
            async with self._http().get(
                url, params={"since": str(since), "wait": f"{wait_s:g}"}, headers=self._headers, timeout=timeout
            ) as resp:
                await _raise_for_status(resp)
                raw = await resp.read()
        try:
            return ChangesReply.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            raise ProtocolError(f"malformed changes reply: {exc.error_count()} errors") from exc

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        """Open a snapshot stream; read its header at once, its objects through `Snapshot.objects()`."""
        t = self.timeouts
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s, sock_read=t.snapshot_read_s)
        base_url = (await self._endpoints.candidates())[0]
        try:
            with _transport("snapshot request failed"):
                resp = await self._http().get(f"{base_url}/v1/sync/snapshot", headers=self._headers, timeout=timeout)
        except ControlPlaneUnreachable:
            self._endpoints.failed(base_url)  # the sync loop's retry goes to the next one
            raise
        self._endpoints.succeeded(base_url)
        lines = _lines(resp.content, self._max_line_bytes)
        try:
            with _transport("snapshot request failed"):
                await _raise_for_status(resp)
            try:
                first = await anext(lines)
            except StopAsyncIteration:
                raise ProtocolError("empty snapshot stream") from None
            epoch, version, kinds = _parse_header(first)
            yield Snapshot(epoch, version, kinds, lines)
        finally:
            await lines.aclose()
            resp.release()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None
        if self._owns_endpoints and isinstance(self._endpoints, SrvEndpoints):
            await self._endpoints.close()

    async def __aenter__(self) -> SyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

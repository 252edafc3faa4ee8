"""The change feed fanned out to many waiting edges: one read and one serialised reply per version,
old cursors served contiguously, a non-reading client holds no more than one reply's worth."""

from __future__ import annotations

import asyncio
import socket

import httpx

from control.services.sync import ChangeFeed, Page
from tests.conftest import RunningControl
from tests.helpers import add_region, version


async def _put_region(admin: httpx.AsyncClient, name: str, lat: float) -> None:
    r = await admin.put(f"/v1/regions/{name}", json={"lat": lat, "lon": 1.0, "edge_url": f"http://{name}.test"})
    assert r.status_code == 200, r.text


def _feed(control: RunningControl) -> ChangeFeed:
    feed: ChangeFeed = control.app.state.sync.feed
    return feed


async def test_a_thousand_waiters_share_one_read_and_one_bytes_object(
    control: RunningControl, admin: httpx.AsyncClient
) -> None:
    feed = _feed(control)
    waiters = 1000
    await add_region(admin, "eu-west")
    v = await version(admin)
    polls = [asyncio.create_task(feed.long_poll(v, 30)) for _ in range(waiters)]
    await asyncio.wait_for(feed.wait_for_waiting(lambda n: n >= waiters), 20)
    reads_before = feed.reads
    await _put_region(admin, "eu-west", 3.0)
    pages: list[Page] = await asyncio.wait_for(asyncio.gather(*polls), 30)
    assert feed.reads - reads_before == 1, "one database read served every waiter"
    assert all(p.body is pages[0].body for p in pages), "one serialised reply, the same bytes for every waiter"
    assert pages[0].since == v and pages[0].to == v + 1 and pages[0].count == 1
    # Back at the new head, every waiter waits again without reading: still one read for the version.
    again = [asyncio.create_task(feed.long_poll(v + 1, 30)) for _ in range(waiters)]
    await asyncio.wait_for(feed.wait_for_waiting(lambda n: n >= waiters), 20)
    assert feed.reads - reads_before == 1, "waiting at a head a read just confirmed reads nothing"
    await _put_region(admin, "eu-west", 4.0)
    pages = await asyncio.wait_for(asyncio.gather(*again), 30)
    assert feed.reads - reads_before == 2 and {p.to for p in pages} == {v + 2}


async def test_waiters_over_http_get_identical_replies_from_one_read(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    feed = _feed(control)
    waiters = 200
    await add_region(admin, "eu-west")
    v = await version(admin)
    async with control.client(edge_token, limits=httpx.Limits(max_connections=waiters + 5)) as edges:
        polls = [
            asyncio.create_task(edges.get("/v1/sync/changes", params={"since": v, "wait": 30})) for _ in range(waiters)
        ]
        await asyncio.wait_for(feed.wait_for_waiting(lambda n: n >= waiters), 30)
        reads_before = feed.reads
        await _put_region(admin, "eu-west", 5.0)
        replies = await asyncio.wait_for(asyncio.gather(*polls), 30)
    assert feed.reads - reads_before == 1
    assert {r.status_code for r in replies} == {200}
    assert len({r.content for r in replies}) == 1
    assert replies[0].headers["content-type"] == "application/json"
    assert replies[0].headers["cache-control"] == "no-store"
    reply = replies[0].json()
    assert reply["from"] == v and reply["to"] == v + 1 and reply["more"] is False


async def test_old_cursors_get_contiguous_replies_one_read_per_cursor(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    feed = _feed(control)
    await add_region(admin, "eu-west")
    v = await version(admin)
    for i in range(3):
        await _put_region(admin, "eu-west", 10.0 + i)
    head = await version(admin)
    assert head == v + 3
    per_cursor = 20
    async with control.client(edge_token, limits=httpx.Limits(max_connections=3 * per_cursor + 5)) as edges:
        reads_before = feed.reads
        cursors = [v + k for k in range(3) for _ in range(per_cursor)]
        replies = await asyncio.gather(
            *(edges.get("/v1/sync/changes", params={"since": c, "wait": 10}) for c in cursors)
        )
    assert feed.reads - reads_before == 3, "one read per distinct cursor, shared by its requests"
    for cursor, r in zip(cursors, replies, strict=True):
        assert r.status_code == 200, r.text
        reply = r.json()
        assert reply["from"] == cursor and reply["to"] == head
        assert [c["version"] for c in reply["changes"]] == list(range(cursor + 1, head + 1))
        assert [c["body"]["lat"] for c in reply["changes"]] == [10.0 + i for i in range(cursor - v, 3)]


async def test_a_client_that_does_not_read_holds_at_most_one_reply(
    control: RunningControl, admin: httpx.AsyncClient, edge_token: str
) -> None:
    """It pipelines a thousand requests and reads nothing: the server writes one reply's worth into
    the socket and then stops reading the client's requests (flow control), so what it buffers for
    that client stays near one reply, however many the client asked for."""
    for i in range(40):  # a reply from 0 carries every change: a few kilobytes
        await _put_region(admin, f"r-{i}", float(i))
    async with control.client(edge_token) as edge:
        reply_bytes = len((await edge.get("/v1/sync/changes", params={"since": 0})).content)
    assert reply_bytes > 4000
    host, port = control.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    request = f"GET /v1/sync/changes?since=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {edge_token}\r\n\r\n"
    _, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(request.encode() * 1000)  # this side buffers what the server does not take
        # Answering is a loop turn per request: let the server do all it will do.
        await _until_stable(lambda: _buffered(control))
        buffered = _buffered(control)
        assert buffered <= 256 * 1024 + 2 * reply_bytes, (buffered, reply_bytes)
        assert 1000 * reply_bytes > 10 * buffered, "unbounded would be a thousand replies"
    finally:
        writer.close()


def _buffered(control: RunningControl) -> int:
    """Bytes the server holds in its transports' write buffers, over every connection."""
    connections = control.server.server_state.connections
    return sum(c.transport.get_write_buffer_size() for c in connections if getattr(c, "transport", None))


async def _until_stable(value: object, turns: int = 20) -> None:
    assert callable(value)
    last, same = value(), 0
    while same < turns:
        await asyncio.sleep(0.01)
        now = value()
        same = same + 1 if now == last else 0
        last = now

"""The process executor against real processes and real loopback sockets.

Children report their pids over a small TCP "beacon" so the tests await events instead of sleeping,
and "is it gone?" is awaited with a pidfd (Linux), which also covers grandchildren the executor
does not reap itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from edge.executors import (
    BackendExit,
    PoolTag,
    ProcessExecutor,
    SpawnRequest,
    StartFailed,
    StartRefused,
)
from edge.executors import process as process_module
from sync import net
from sync.models import FromEdgeEnv, TemplateSpec, TerminationReason

REPO = str(Path(__file__).resolve().parents[2])
DEMO = [sys.executable, "-m", "meridian.demo"]
GRACE_S = 1.0

# A plain HTTP server that reports its pid (and optionally a grandchild's) to the test's beacon.
BEACON = """
import os, socket
def beacon(text):
    port = os.environ.get("BEACON_PORT")
    if port:
        with socket.create_connection(("127.0.0.1", int(port))) as s:
            s.sendall((text + "\\n").encode())
"""
FAMILY_CHILD = (
    BEACON
    + """
import signal, sys
def on_term(*_):
    beacon(f"{os.getpid()}")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
beacon(f"{os.getpid()}")
signal.pause()
"""
)
SERVE = (
    BEACON
    + "FAMILY_CHILD = "
    + repr(FAMILY_CHILD)
    + """
import http.server, signal, subprocess, sys
mode = sys.argv[1] if len(sys.argv) > 1 else "serve"
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "alloc":
    blob = bytearray(int(os.environ["ALLOC_MB"]) * 1024 * 1024)
child = ""
if mode == "never-ready":
    child = str(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]).pid)
if mode == "family":  # the leader ignores SIGTERM; its child tells the beacon when SIGTERM reaches it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = str(subprocess.Popen([sys.executable, "-c", FAMILY_CHILD], env=os.environ).pid)
beacon(f"{os.getpid()} {child}".strip())
if mode == "never-ready":
    signal.pause()
class Env(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = repr(dict(os.environ)).encode()
        self.send_response(int(os.environ.get("STATUS", "200")))
        self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Env).serve_forever()
"""
)


class Recorder:
    """The executor's on_exit: records every exit and lets a test await one."""

    def __init__(self) -> None:
        self.exits: list[BackendExit] = []
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def __call__(self, exit_: BackendExit) -> None:
        self.exits.append(exit_)
        self._events[exit_.backend_id].set()

    async def wait(self, backend_id: str, within_s: float = 10.0) -> BackendExit:
        await asyncio.wait_for(self._events[backend_id].wait(), within_s)
        return self.of(backend_id)

    def of(self, backend_id: str) -> BackendExit:
        mine = [e for e in self.exits if e.backend_id == backend_id]
        assert len(mine) == 1, f"on_exit must be called exactly once for {backend_id}, got {mine}"
        return mine[0]


class Beacon:
    """Children connect and send one line (their pid, ...); tests await the lines in order."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.lines.put_nowait((await reader.readline()).decode().strip())
        writer.close()

    async def next(self, within_s: float = 10.0) -> list[int]:
        line = await asyncio.wait_for(self.lines.get(), within_s)
        return [int(x) for x in line.split()]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def wait_gone(pid: int, within_s: float = 10.0) -> None:
    """Await the end of any process (child or not) with a pidfd; no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(done, within_s)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def dead(pid: int) -> bool:
    """Gone, or a zombie waiting for a parent (pid 1 in a container may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def address_space_limit(pid: int) -> str:
    """The soft and hard RLIMIT_AS of a process, as /proc shows them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            return " ".join(line.split()[3:5])
    raise AssertionError("no address space line")


def process_spec(argv: list[str], **kw: object) -> TemplateSpec:
    env = {"PYTHONPATH": REPO, **kw.pop("env", {})}  # type: ignore[dict-item]
    return TemplateSpec(executor="process", argv=argv, env=env, **kw)  # type: ignore[arg-type]


def serve_spec(beacon: Beacon, mode: str = "serve", **kw: object) -> TemplateSpec:
    env = {"BEACON_PORT": str(beacon.port), **kw.pop("env", {})}  # type: ignore[dict-item]
    return process_spec([sys.executable, "-c", SERVE, mode], env=env, **kw)


_counter = 0


def request(spec: TemplateSpec, **kw: object) -> SpawnRequest:
    global _counter
    _counter += 1
    fields: dict[str, object] = {
        "backend_id": f"bk-test{_counter}-{os.getpid()}",
        "key": "doc-42",
        "fencing_token": 7,
        "region": "eu-west",
        "secret": "s3cret-value",
        "template": spec,
        "template_id": "tp-test",
    }
    fields.update(kw)
    return SpawnRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def executor(recorder: Recorder, tmp_path: Path) -> AsyncIterator[ProcessExecutor]:
    ex = ProcessExecutor(recorder, log_dir=tmp_path / "logs", grace_s=GRACE_S)
    try:
        yield ex
    finally:
        await ex.close()


async def get_json(address: str, path: str, headers: dict[str, str] | None = None) -> dict[str, object]:
    async with aiohttp.ClientSession() as s, s.get(f"http://{address}{path}", headers=headers) as r:
        assert r.status == 200
        body: dict[str, object] = await r.json()
        return body


# ---- the demo backend through the executor ------------------------------------------------------


async def test_demo_backend_starts_ready_and_sees_its_environment(
    executor: ProcessExecutor, recorder: Recorder
) -> None:
    req = request(process_spec(DEMO))
    address = await executor.start(req)  # how fast: bench/, not here (a loaded machine is slow)
    assert address.startswith("127.0.0.1:")
    assert executor.status(req.backend_id) == "ready"

    info = await get_json(address, "/info", {"x-meridian-secret": "s3cret-value", "x-meridian-user": "u1"})
    assert info["backend_id"] == req.backend_id
    assert info["key"] == "doc-42"
    assert info["region"] == "eu-west"
    assert info["fencing_token"] == 7
    assert info["pid"] == executor.pid(req.backend_id)
    assert info["proxied"] is True
    assert info["headers_seen"] == ["x-meridian-secret", "x-meridian-user"]
    assert "s3cret-value" not in str(info)
    assert (await get_json(address, "/info", {"x-meridian-secret": "wrong"}))["proxied"] is False
    assert (await get_json(address, "/info"))["proxied"] is False
    assert recorder.exits == []


async def test_environment_strips_edge_meridian_vars_and_platform_vars_win(
    executor: ProcessExecutor, beacon: Beacon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERIDIAN_ADMIN_TOKEN", "edge-only")
    monkeypatch.setenv("SOME_EDGE_VAR", "kept")
    spec = serve_spec(beacon, env={"FROM_TEMPLATE": "yes", "MERIDIAN_FENCING_TOKEN": "999", "PORT": "1"})
    req = request(spec, key=None, fencing_token=2**62)
    address = await executor.start(req)
    async with aiohttp.ClientSession() as s, s.get(f"http://{address}/") as r:
        env = eval(await r.text())  # the test server's repr(dict(os.environ))
    assert "MERIDIAN_ADMIN_TOKEN" not in env
    assert env["SOME_EDGE_VAR"] == "kept"
    assert env["FROM_TEMPLATE"] == "yes"
    assert env["PORT"] == address.split(":")[1]
    assert env["MERIDIAN_FENCING_TOKEN"] == str(2**62)
    assert env["MERIDIAN_KEY"] == ""
    assert env["MERIDIAN_BACKEND_ID"] == req.backend_id
    assert env["MERIDIAN_REGION"] == "eu-west"
    assert env["MERIDIAN_SECRET"] == "s3cret-value"


async def test_an_edge_side_secret_reaches_the_backend_but_no_other(
    executor: ProcessExecutor, beacon: Beacon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Template env `{"from_edge_env": NAME}` is read from the edge's environment at start (tenancy)."""
    monkeypatch.setenv("MERIDIAN_SECRET_DB_URL", "postgres://app:edge-only@db/app")
    spec = serve_spec(beacon, env={"DATABASE_URL": FromEdgeEnv(from_edge_env="MERIDIAN_SECRET_DB_URL")})
    assert "edge-only" not in spec.model_dump_json(), "the spec (stored, replicated) holds only the reference"
    address = await executor.start(request(spec))
    async with aiohttp.ClientSession() as s, s.get(f"http://{address}/") as r:
        env = eval(await r.text())  # the test server's repr(dict(os.environ))
    assert env["DATABASE_URL"] == "postgres://app:edge-only@db/app"
    assert "MERIDIAN_SECRET_DB_URL" not in env, "an edge secret is passed only where a template names it"
    plain = await executor.start(request(serve_spec(beacon)))
    async with aiohttp.ClientSession() as s, s.get(f"http://{plain}/") as r:
        assert "edge-only" not in await r.text()


async def test_a_template_naming_an_edge_secret_this_edge_lacks_is_refused(
    executor: ProcessExecutor, beacon: Beacon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MERIDIAN_SECRET_ABSENT", raising=False)
    spec = serve_spec(beacon, env={"X": FromEdgeEnv(from_edge_env="MERIDIAN_SECRET_ABSENT")})
    with pytest.raises(StartRefused, match="MERIDIAN_SECRET_ABSENT"):
        await executor.start(request(spec))


# ---- failures to start ----------------------------------------------------------------------------


async def test_crash_at_start_raises_start_failed_with_exit_code(executor: ProcessExecutor, recorder: Recorder) -> None:
    req = request(process_spec([sys.executable, "-c", "import sys; sys.exit(3)"]))
    with pytest.raises(StartFailed) as info:
        await executor.start(req)
    assert info.value.exit_code == 3
    assert recorder.of(req.backend_id) == BackendExit(req.backend_id, 3, TerminationReason.FAILED)
    assert executor.status(req.backend_id) == "exited"


async def test_missing_program_is_a_start_failure(executor: ProcessExecutor, recorder: Recorder) -> None:
    req = request(process_spec(["/nonexistent/meridian-backend"]))
    with pytest.raises(StartFailed, match="cannot execute"):
        await executor.start(req)
    assert recorder.of(req.backend_id).reason == TerminationReason.FAILED


async def test_never_ready_is_killed_after_start_timeout_with_its_children(
    executor: ProcessExecutor, recorder: Recorder, beacon: Beacon
) -> None:
    req = request(serve_spec(beacon, "never-ready", start_timeout_s=1))
    start = asyncio.create_task(executor.start(req))
    pid, grandchild = await beacon.next()
    t0 = time.monotonic()
    with pytest.raises(StartFailed, match="not ready within 1s") as info:
        await start
    assert time.monotonic() - t0 < 1.5
    assert info.value.exit_code == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped by the executor
    await wait_gone(grandchild)  # same process group: killed with it
    assert dead(grandchild)
    assert recorder.of(req.backend_id).reason == TerminationReason.FAILED


async def test_any_http_answer_below_500_means_ready(executor: ProcessExecutor, beacon: Beacon) -> None:
    req = request(serve_spec(beacon, env={"STATUS": "404"}, ready_path="/healthz"))
    address = await executor.start(req)
    assert executor.status(req.backend_id) == "ready" and address.startswith("127.0.0.1:")


async def test_answering_5xx_is_not_ready(executor: ProcessExecutor, recorder: Recorder, beacon: Beacon) -> None:
    # Long enough for the server to come up on a loaded machine, then answer 503 until the end.
    req = request(serve_spec(beacon, env={"STATUS": "503"}, start_timeout_s=4))
    with pytest.raises(StartFailed, match="HTTP 503"):
        await executor.start(req)
    assert recorder.of(req.backend_id).reason == TerminationReason.FAILED


async def test_port_taken_before_the_backend_binds_is_retried_on_a_new_port(
    executor: ProcessExecutor, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    ports = iter([taken])
    real = net.free_port
    monkeypatch.setattr(process_module, "free_port", lambda host: next(ports, None) or real(host))
    try:
        req = request(process_spec(DEMO))
        address = await executor.start(req)
    finally:
        squatter.close()
    assert address != f"127.0.0.1:{taken}"
    assert (await get_json(address, "/info"))["backend_id"] == req.backend_id
    log = executor.log_path(req.backend_id)
    assert log is not None
    text = log.read_text()
    assert "attempt 1" in text and "attempt 2" in text and "address already in use" in text
    assert recorder.exits == []  # the first attempt is not an exit of the backend


async def test_memory_limit_kills_a_backend_that_allocates_more(
    executor: ProcessExecutor, recorder: Recorder, beacon: Beacon
) -> None:
    greedy = request(serve_spec(beacon, "alloc", env={"ALLOC_MB": "256"}, memory_mb=128))
    with pytest.raises(StartFailed) as info:
        await executor.start(greedy)
    assert info.value.exit_code == 1
    log = executor.log_path(greedy.backend_id)
    assert log is not None and "MemoryError" in log.read_text()
    assert recorder.of(greedy.backend_id).reason == TerminationReason.FAILED

    # The same allocation without a limit is fine, and a modest one under a limit runs with it.
    unlimited = request(serve_spec(beacon, "alloc", env={"ALLOC_MB": "256"}))
    await executor.start(unlimited)
    modest = request(serve_spec(beacon, "alloc", env={"ALLOC_MB": "16"}, memory_mb=256))
    await executor.start(modest)
    pid = executor.pid(modest.backend_id)
    assert pid is not None
    assert address_space_limit(pid) == f"{256 * 2**20} {256 * 2**20}"


# ---- stopping and crashing ------------------------------------------------------------------------


async def test_stop_is_graceful_for_a_cooperative_backend(executor: ProcessExecutor, recorder: Recorder) -> None:
    req = request(process_spec(DEMO))
    await executor.start(req)
    pid = executor.pid(req.backend_id)
    assert pid is not None
    t0 = time.monotonic()
    await executor.stop(req.backend_id, hard=False, reason=TerminationReason.IDLE)
    assert time.monotonic() - t0 < GRACE_S
    # The demo exits 0 on SIGTERM; on_exit has run by the time stop returns.
    assert recorder.of(req.backend_id) == BackendExit(req.backend_id, 0, TerminationReason.IDLE)
    assert executor.status(req.backend_id) == "exited"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    await executor.stop(req.backend_id, hard=True, reason=TerminationReason.REQUESTED)  # idempotent
    assert len(recorder.exits) == 1


async def test_backend_ignoring_sigterm_is_killed_after_grace(
    executor: ProcessExecutor, recorder: Recorder, beacon: Beacon
) -> None:
    req = request(serve_spec(beacon, "ignore-term"))
    await executor.start(req)
    (pid,) = await beacon.next()
    t0 = time.monotonic()
    await executor.stop(req.backend_id, hard=False, reason=TerminationReason.LIFETIME)
    elapsed = time.monotonic() - t0
    assert GRACE_S <= elapsed < GRACE_S + 1.0
    assert recorder.of(req.backend_id) == BackendExit(req.backend_id, -signal.SIGKILL, TerminationReason.LIFETIME)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_sigterm_reaches_the_whole_process_group(
    executor: ProcessExecutor, recorder: Recorder, beacon: Beacon
) -> None:
    req = request(serve_spec(beacon, "family"))
    start = asyncio.create_task(executor.start(req))
    # Two reports, in either order: the leader's "leader child" and the child's own "child".
    reports = sorted([await beacon.next(), await beacon.next()], key=len)
    (child,), (leader, child_again) = reports
    assert child_again == child
    await start
    stop = asyncio.create_task(executor.stop(req.backend_id, hard=False, reason=TerminationReason.REQUESTED))
    assert await beacon.next() == [child]  # its SIGTERM handler ran: the signal went to the group
    await stop
    assert recorder.of(req.backend_id).exit_code == -signal.SIGKILL  # the leader ignored it
    for pid in (leader, child):
        await wait_gone(pid)


async def test_hard_stop_kills_at_once(executor: ProcessExecutor, recorder: Recorder, beacon: Beacon) -> None:
    req = request(serve_spec(beacon, "ignore-term"))
    await executor.start(req)
    t0 = time.monotonic()
    await executor.stop(req.backend_id, hard=True, reason=TerminationReason.SUPERSEDED)
    assert time.monotonic() - t0 < GRACE_S / 2
    assert recorder.of(req.backend_id).reason == TerminationReason.SUPERSEDED


async def test_crash_after_ready_is_reported_as_failed(executor: ProcessExecutor, recorder: Recorder) -> None:
    req = request(process_spec(DEMO))
    await executor.start(req)
    pid = executor.pid(req.backend_id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    exit_ = await recorder.wait(req.backend_id)
    assert exit_ == BackendExit(req.backend_id, -signal.SIGKILL, TerminationReason.FAILED)
    assert executor.status(req.backend_id) == "exited"


async def test_stop_while_starting_reports_the_stop_reason_once(
    executor: ProcessExecutor, recorder: Recorder, beacon: Beacon
) -> None:
    req = request(serve_spec(beacon, "never-ready", start_timeout_s=30))
    start = asyncio.create_task(executor.start(req))
    await beacon.next()
    assert executor.status(req.backend_id) == "starting"
    await executor.stop(req.backend_id, hard=False, reason=TerminationReason.REQUESTED)
    with pytest.raises(StartFailed, match="stopped while starting"):
        await start
    assert recorder.of(req.backend_id).reason == TerminationReason.REQUESTED


async def test_cancelled_start_leaves_nothing_running(
    executor: ProcessExecutor, recorder: Recorder, beacon: Beacon
) -> None:
    req = request(serve_spec(beacon, "never-ready", start_timeout_s=30))
    start = asyncio.create_task(executor.start(req))
    pid, grandchild = await beacon.next()
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    await wait_gone(grandchild)
    assert recorder.of(req.backend_id).reason == TerminationReason.FAILED


async def test_close_stops_everything_and_refuses_new_starts(
    recorder: Recorder, beacon: Beacon, tmp_path: Path
) -> None:
    executor = ProcessExecutor(recorder, log_dir=tmp_path, grace_s=GRACE_S)
    reqs = [request(process_spec(DEMO)), request(serve_spec(beacon, "ignore-term"))]
    for req in reqs:
        await executor.start(req)
    pids = [executor.pid(r.backend_id) for r in reqs]
    assert all(pids)
    await executor.close()
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert {recorder.of(r.backend_id).reason for r in reqs} == {TerminationReason.REQUESTED}
    with pytest.raises(StartRefused):
        await executor.start(request(process_spec(DEMO)))


async def test_refusals_do_not_report_exits(executor: ProcessExecutor, recorder: Recorder) -> None:
    req = request(process_spec(DEMO))
    await executor.start(req)
    with pytest.raises(StartRefused, match="already started"):
        await executor.start(req)
    with pytest.raises(StartRefused, match="safe identifier"):
        await executor.start(request(process_spec(DEMO), backend_id="../etc"))
    nomad_spec = TemplateSpec(executor="nomad", image="demo:1")
    with pytest.raises(StartRefused, match="not a process template"):
        await executor.start(request(nomad_spec))
    assert executor.status("bk-never-seen") == "unknown"
    await executor.stop("bk-never-seen", hard=True, reason=TerminationReason.REQUESTED)  # no-op
    assert recorder.exits == []


# ---- warm-pool members: no identity at start, rekeyed by a claim, adopted or swept after a crash --


def pool_request(spec: TemplateSpec, member_id: str, node_id: str = "nd-pooltest") -> SpawnRequest:
    return request(
        spec, backend_id=member_id, key=None, fencing_token=0, secret="pool-secret", pool=PoolTag(member_id, node_id)
    )


async def test_a_pool_member_starts_without_an_identity_and_is_known_by_its_backend_id_once_claimed(
    executor: ProcessExecutor, recorder: Recorder, tmp_path: Path
) -> None:
    spec = process_spec(DEMO, warm_pool=1, claim_path="/_meridian/claim")
    member = pool_request(spec, f"wp-a{os.getpid()}")
    address = await executor.start(member)
    info = await get_json(address, "/info", {"x-meridian-secret": "pool-secret"})
    assert (info["backend_id"], info["key"], info["fencing_token"], info["proxied"]) == ("", None, None, True)
    member_pid = executor.pid(member.backend_id)
    assert member_pid is not None
    assert os.getpriority(os.PRIO_PROCESS, member_pid) == process_module.POOL_MEMBER_NICE, "refills yield the CPU"
    claimed = dataclasses.replace(member, backend_id=f"bk-claimed{os.getpid()}", key="doc-1", fencing_token=4)
    executor.prioritise(member.backend_id)
    assert await executor.rekey(member.backend_id, claimed)
    if os.geteuid() == 0:  # lowering niceness needs CAP_SYS_NICE
        assert os.getpriority(os.PRIO_PROCESS, member_pid) == 0
    assert executor.status(member.backend_id) == "unknown" and executor.status(claimed.backend_id) == "ready"
    assert executor.log_path(claimed.backend_id) == tmp_path / "logs" / f"{claimed.backend_id}.log"
    assert (tmp_path / "logs" / f"{claimed.backend_id}.log").exists()
    assert not await executor.rekey(member.backend_id, claimed), "a member is claimed once"
    pid = executor.pid(claimed.backend_id)
    assert pid is not None
    await executor.stop(claimed.backend_id, hard=False, reason=TerminationReason.IDLE)
    assert [(e.backend_id, e.reason) for e in recorder.exits] == [(claimed.backend_id, TerminationReason.IDLE)]
    assert dead(pid)


async def test_after_a_crash_claimed_members_are_adopted_and_unclaimed_ones_killed(
    recorder: Recorder, tmp_path: Path
) -> None:
    spec = process_spec(DEMO, warm_pool=2, claim_path="/_meridian/claim")
    crashed = ProcessExecutor(recorder, log_dir=tmp_path / "logs", grace_s=GRACE_S)
    unclaimed = pool_request(spec, f"wp-u{os.getpid()}")
    member = pool_request(spec, f"wp-c{os.getpid()}")
    await crashed.start(unclaimed)
    await crashed.start(member)
    claimed = dataclasses.replace(member, backend_id=f"bk-adopt{os.getpid()}", key="doc-2", fencing_token=9)
    assert await crashed.rekey(member.backend_id, claimed)
    pids = {bid: crashed.pid(bid) for bid in (unclaimed.backend_id, claimed.backend_id)}
    # The edge process dies: its executor forgets everything, the processes keep running.
    for rec in list(crashed._live.values()):
        assert rec.monitor is not None
        rec.monitor.cancel()
    crashed._live.clear()

    restarted = ProcessExecutor(recorder, log_dir=tmp_path / "logs", grace_s=GRACE_S)
    try:
        assert await restarted.adopt(claimed) is not None
        assert await restarted.kill_pool_orphans("nd-other") == 0, "another node's members are not ours"
        assert await restarted.kill_pool_orphans("nd-pooltest") == 1
        unclaimed_pid = pids[unclaimed.backend_id]
        assert unclaimed_pid is not None
        await wait_gone(unclaimed_pid)
        assert restarted.pid(claimed.backend_id) == pids[claimed.backend_id]
        assert not dead(pids[claimed.backend_id] or 0)
    finally:
        await restarted.close()
    assert dead(pids[claimed.backend_id] or 0)


async def test_detaching_for_an_upgrade_leaves_backends_running_and_stops_unclaimed_members(
    recorder: Recorder, tmp_path: Path
) -> None:
    spec = process_spec(DEMO, warm_pool=1, claim_path="/_meridian/claim")
    leaving = ProcessExecutor(recorder, log_dir=tmp_path / "logs", grace_s=GRACE_S)
    backend, unclaimed = request(process_spec(DEMO)), pool_request(spec, f"wp-d{os.getpid()}")
    await leaving.start(backend)
    await leaving.start(unclaimed)
    pid, member_pid = leaving.pid(backend.backend_id), leaving.pid(unclaimed.backend_id)
    assert pid is not None and member_pid is not None
    await leaving.detach()
    await wait_gone(member_pid)
    assert not dead(pid), "the backend keeps running for the next edge"
    assert [e.backend_id for e in recorder.exits] == [unclaimed.backend_id]
    with pytest.raises(StartRefused):
        await leaving.start(request(process_spec(DEMO)))

    after = ProcessExecutor(recorder, log_dir=tmp_path / "logs", grace_s=GRACE_S)
    try:
        assert await after.adopt(backend) is not None and after.pid(backend.backend_id) == pid
        os.kill(pid, signal.SIGKILL)
        exit_ = await recorder.wait(backend.backend_id)
        assert exit_.reason is TerminationReason.FAILED, "watched (and reported) once, by the new executor"
    finally:
        await after.close()

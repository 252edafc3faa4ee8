"""The edge's journal on real files: what is confirmed survives a reopen, a torn last line is
dropped, acks end pending entries, compaction keeps what matters."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge import journal as journal_module
from edge.journal import FILE_NAME, Journal
from sync.models import BackendStatus, StatusReport, TemplateSpec, TerminationReason
from sync.state import BackendState

SPEC = TemplateSpec(executor="process", argv=["x"])


def _backend(key: str | None, token: int) -> BackendState:
    now = datetime.now(UTC)
    return BackendState(
        id=f"bk-{secrets.token_hex(6)}",
        key=key,
        template_name="demo",
        template_id="tp-1",
        region="eu-west",
        node_id="nd-a",
        status=BackendStatus.STARTING,
        fencing_token=token,
        secret="s" * 24,
        created_at=now,
        status_changed_at=now,
    )


async def test_confirmed_records_survive_a_reopen_with_pending_entries_and_tokens(tmp_path: Path) -> None:
    j = Journal.open(tmp_path)
    offline, online = _backend("doc", 70000), _backend("other", 3)
    await j.record_backend(offline, SPEC, replay=True)
    await j.record_backend(online, SPEC, replay=False)
    await j.record_process(offline.id, 1234, "127.0.0.1:5000")
    await j.record_status(
        StatusReport(id=offline.id, status=BackendStatus.READY, address="127.0.0.1:5000"), replay=True
    )
    await j.record_status(StatusReport(id="bk-unknown", status=BackendStatus.READY), replay=True)
    assert j.pending == 2
    j.close()
    again = Journal.open(tmp_path)
    try:
        assert again.pending == 2 and again.greatest_token("doc") == 70000 and again.greatest_token("none") == 0
        entries = again.pending_entries(10)
        assert entries[0].spawn is not None and entries[0].spawn.id == offline.id
        assert entries[1].report is not None and entries[1].report.status is BackendStatus.READY
        known = again.backend(offline.id)
        assert known is not None and (known.pid, known.address, known.status) == (1234, "127.0.0.1:5000", "ready")
        await again.ack(entries[-1].seq)
        assert again.pending == 0
    finally:
        again.close()
    assert Journal.open(tmp_path).pending == 0


async def test_a_torn_last_line_is_dropped_and_the_journal_goes_on(tmp_path: Path) -> None:
    j = Journal.open(tmp_path)
    await j.record_backend(_backend("doc", 5), SPEC, replay=True)
    j.close()
    path = tmp_path / FILE_NAME
    path.write_bytes(path.read_bytes() + b'{"t": "status", "seq": 2, "repl')  # a crash mid-write: never confirmed
    again = Journal.open(tmp_path)
    try:
        assert again.pending == 1
        await again.record_status(
            StatusReport(id=again.backends()[0].backend.id, status=BackendStatus.READY), replay=True
        )
        assert again.pending == 2
    finally:
        again.close()
    assert Journal.open(tmp_path).pending == 2


async def test_compaction_keeps_live_backends_and_pending_entries_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = Journal.open(tmp_path)
    ended, live, offline = _backend("a", 1), _backend("b", 2), _backend("c", 70000)
    for b in (ended, live):
        await j.record_backend(b, SPEC, replay=False)
    await j.record_backend(offline, SPEC, replay=True)
    await j.record_process(live.id, 99, "127.0.0.1:1")
    gone = StatusReport(id=ended.id, status=BackendStatus.TERMINATED, termination_reason=TerminationReason.IDLE)
    await j.record_status(gone, replay=False)
    for _ in range(30):
        await j.record_status(StatusReport(id=live.id, status=BackendStatus.READY, address="127.0.0.1:1"), replay=False)
    j.close()
    monkeypatch.setattr(journal_module, "COMPACT_ABOVE_LINES", 10)
    again = Journal.open(tmp_path)
    try:
        assert {b.backend.id for b in again.backends()} == {live.id, offline.id}
        assert again.pending == 1 and again.pending_entries(5)[0].spawn.id == offline.id  # type: ignore[union-attr]
        assert again.backend(live.id).address == "127.0.0.1:1"  # type: ignore[union-attr]
        assert len((tmp_path / FILE_NAME).read_bytes().splitlines()) < 10
    finally:
        again.close()

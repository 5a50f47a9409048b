"""The SQLite store's transcript: a deep run reads and writes it several times a turn.

Opening a connection per call cost more than the statement (a thread and a
connect each time, some milliseconds under load, the largest share of a deep
turn's overhead at zero latency, bench/deep_overhead.py), so the store keeps
one connection for the transcript. These tests pin that down and that nothing
else changed: first write wins, every write is committed when the call returns
(another connection sees it at once), concurrent calls are safe, and a closed
store reopens its connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from tests.support.abandoned import no_abandoned_async_work  # noqa: F401  (autouse)

from steadfast_worker.activities.storage import SqliteStore

pytestmark = pytest.mark.unit


async def test_a_turns_reads_and_writes_share_one_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await SqliteStore.open(str(tmp_path / "r.db"))
    opened = []
    real = sqlite3.connect

    def counting(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", counting)
    try:
        for turn in range(1, 11):
            await store.put_part("wf/run", turn, "assistant", f"reply {turn}")
            await store.put_part("wf/run", turn, "result:t1", f"result {turn}")
            assert len(await store.get_parts("wf/run", turn)) == 2 * turn
    finally:
        await store.close()
    assert len(opened) <= 1


async def test_parts_are_committed_first_write_wins_and_survive_close(tmp_path: Path) -> None:
    path = str(tmp_path / "r.db")
    store = await SqliteStore.open(path)
    assert await store.put_part("wf/run", 1, "assistant", "first")
    # A retried attempt's reply: not stored, and the caller is told so.
    assert not await store.put_part("wf/run", 1, "assistant", "second")
    with sqlite3.connect(path) as other:  # committed: another connection sees it now
        rows = other.execute("SELECT body FROM steadfast_transcripts").fetchall()
    assert rows == [("first",)]
    await store.close()
    await store.put_part("wf/run", 2, "result:a", "after close")  # reopens
    assert await store.get_parts("wf/run", 2) == [
        (1, "assistant", "first"),
        (2, "result:a", "after close"),
    ]
    assert await store.get_parts("wf/run", 1) == [(1, "assistant", "first")]
    await store.close()


async def test_concurrent_tool_results_are_all_stored(tmp_path: Path) -> None:
    store = await SqliteStore.open(str(tmp_path / "r.db"))
    try:
        await asyncio.gather(
            *(store.put_part("wf/run", 3, f"result:t{i}", str(i)) for i in range(30)),
            *(store.get_parts("wf/run", 3) for _ in range(10)),
        )
        parts = await store.get_parts("wf/run", 3)
    finally:
        await store.close()
    assert sorted(int(body) for _, _, body in parts) == list(range(30))


async def test_a_report_saved_with_its_conversation_deletes_that_transcript(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(str(tmp_path / "r.db"))
    try:
        for conversation in ("wf/run", "other/run"):
            await store.put_part(conversation, 1, "assistant", "reply")
        report = {"workflow_id": "wf", "report_id": "r1", "run_id": "run", "agent": "a",
                  "namespace": "n", "topic": "t", "markdown": "# r", "cost_usd": 0.1}  # fmt: skip
        saved = await store.save_report(**report, conversation="wf/run")
        assert saved.created
        assert await store.get_parts("wf/run", 9) == []
        assert await store.get_parts("other/run", 9) == [(1, "assistant", "reply")]
        # A retried save finds its row and deletes nothing more.
        again = await store.save_report(**report, conversation="wf/run")
        assert (again.report_id, again.created) == ("r1", False)
        assert await store.get_parts("other/run", 9) == [(1, "assistant", "reply")]
    finally:
        await store.close()

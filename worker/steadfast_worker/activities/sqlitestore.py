"""The report store on SQLite: the embedded default for ``steadfast dev``.

The same statements as Postgres (:mod:`steadfast_worker.activities.statements`), the
same guarantees (:mod:`steadfast_worker.activities.storage` says which), on one file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import aiosqlite

from steadfast_worker.activities import schema
from steadfast_worker.activities.reportrows import SavedReport, StoredReport, now_iso
from steadfast_worker.activities.statements import (
    CLAIM_EMAIL,
    COUNT_REPORTS,
    EMAIL_STATUS,
    FORGET_TRANSCRIPT,
    GET_PART,
    GET_PARTS,
    GET_REPORT,
    IDLE_CONVERSATIONS,
    LIST_REPORTS,
    MARK_EMAIL,
    PUT_PART,
    UPSERT_REPORT,
    scheduled_runs_pattern,
    sql,
)


class SqliteStore:
    """One aiosqlite connection per call: the embedded default for ``steadfast dev``.

    SQLite serialises writers itself; WAL mode lets ``steadfast status`` read
    while a worker writes, and the busy timeout rides out concurrent workers.
    """

    backend = "sqlite"

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = asyncio.Lock()
        # The transcript's own connection: a deep turn reads and writes it several
        # times, and a connection per call (a thread and a connect) cost more than
        # the statement. Autocommit, so each write is committed when it returns, as
        # before; a plain sqlite3 connection, so an unclosed store holds no thread.
        self._parts: sqlite3.Connection | None = None
        self._parts_lock = threading.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        store = cls(path)
        # Autocommit: the schema setup runs its own BEGIN IMMEDIATE ... COMMIT.
        async with aiosqlite.connect(path, timeout=30.0, isolation_level=None) as db:
            await db.execute("PRAGMA journal_mode=WAL")
            await schema.setup_sqlite(db)
        return store

    def _connect(self) -> aiosqlite.Connection:
        return aiosqlite.connect(self._path, timeout=30.0)

    async def _write(
        self,
        template: str,
        params: dict[str, Any],
        then: tuple[str, dict[str, Any]] | None = None,
    ) -> Any:
        """Run ``template`` (and ``then``, in the same transaction); its first row."""
        async with self._lock, self._connect() as db:
            cursor = await db.execute(sql(template, "sqlite"), params)
            row = await cursor.fetchone()
            if then is not None:
                await db.execute(sql(then[0], "sqlite"), then[1])
            await db.commit()
            return row

    async def save_report(self, **kw: Any) -> SavedReport:
        row = await self._write(
            UPSERT_REPORT,
            {
                "p1": kw["workflow_id"],
                "p2": kw["report_id"],
                "p3": kw["run_id"],
                "p4": kw["agent"],
                "p5": kw["namespace"],
                "p6": kw["topic"],
                "p7": kw["markdown"],
                "p8": kw["cost_usd"],
                "p9": now_iso(),
            },
            then=(FORGET_TRANSCRIPT, {"p1": kw["conversation"]})
            if kw.get("conversation")
            else None,
        )
        return SavedReport(str(row[0]), bool(row[1]))

    async def claim_email(self, workflow_id: str, run_id: str, recipients: str) -> bool:
        row = await self._write(
            CLAIM_EMAIL, {"p1": workflow_id, "p2": run_id, "p3": recipients, "p4": now_iso()}
        )
        return row is not None

    async def mark_email(
        self, workflow_id: str, run_id: str, status: str, detail: str = ""
    ) -> None:
        await self._write(
            MARK_EMAIL,
            {"p1": workflow_id, "p2": run_id, "p3": status, "p4": now_iso(), "p5": detail},
        )

    async def _read(self, template: str, params: dict[str, Any]) -> Any:
        async with self._connect() as db:
            cursor = await db.execute(sql(template, "sqlite"), params)
            return await cursor.fetchone()

    async def email_status(self, workflow_id: str, run_id: str) -> str | None:
        row = await self._read(EMAIL_STATUS, {"p1": workflow_id, "p2": run_id})
        return None if row is None else str(row[0])

    async def count_reports(self, workflow_id: str) -> int:
        row = await self._read(COUNT_REPORTS, {"p1": workflow_id})
        return int(row[0]) if row is not None else 0

    async def list_reports(self, workflow_id: str) -> list[StoredReport]:
        async with self._connect() as db:
            params = {"p1": workflow_id, "p2": scheduled_runs_pattern(workflow_id)}
            cursor = await db.execute(sql(LIST_REPORTS, "sqlite"), params)
            return [StoredReport.from_row(r) for r in await cursor.fetchall()]

    async def get_report(self, report_id: str) -> StoredReport | None:
        async with self._connect() as db:
            cursor = await db.execute(sql(GET_REPORT, "sqlite"), {"p1": report_id})
            row = await cursor.fetchone()
            return None if row is None else StoredReport.from_row(row)

    def _on_transcript(self, template: str, params: dict[str, Any]) -> list[Any]:
        """Run one statement on the transcript's connection (in a worker thread): the
        rows it read, or for an insert ``[n]``, the rows it added."""
        with self._parts_lock:  # one statement at a time on the shared connection
            if self._parts is None:
                self._parts = sqlite3.connect(
                    self._path, timeout=30.0, isolation_level=None, check_same_thread=False
                )
            cursor = self._parts.execute(sql(template, "sqlite"), params)
            return [cursor.rowcount] if template.startswith("INSERT") else cursor.fetchall()

    async def put_part(self, conversation: str, turn: int, part: str, body: str) -> bool:
        params = {"p1": conversation, "p2": turn, "p3": part, "p4": body, "p5": now_iso()}
        return await asyncio.to_thread(self._on_transcript, PUT_PART, params) == [1]

    async def get_parts(self, conversation: str, upto_turn: int) -> list[tuple[int, str, str]]:
        params = {"p1": conversation, "p2": upto_turn}
        rows = await asyncio.to_thread(self._on_transcript, GET_PARTS, params)
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def get_part(self, conversation: str, turn: int, part: str) -> str | None:
        params = {"p1": conversation, "p2": turn, "p3": part}
        rows = await asyncio.to_thread(self._on_transcript, GET_PART, params)
        return str(rows[0][0]) if rows else None

    async def idle_conversations(self, before: str, after: str, limit: int) -> list[str]:
        params = {"p1": before, "p2": after, "p3": limit}
        rows = await asyncio.to_thread(self._on_transcript, IDLE_CONVERSATIONS, params)
        return [str(r[0]) for r in rows]

    async def forget_transcript(self, conversation: str) -> None:
        params = {"p1": conversation}
        await asyncio.to_thread(self._on_transcript, FORGET_TRANSCRIPT, params)

    async def close(self) -> None:
        with self._parts_lock:
            if self._parts is not None:
                self._parts.close()
                self._parts = None

"""A report database made by the one-row-per-workflow schema keeps working after the upgrade.

The test writes the tables with the DDL of the releases before runs were kept
apart (``workflow_id`` alone was the key of reports and email claims), puts a
report and a sent email claim in them, then opens the current store on that
database, twice: the row keeps its report id, a new run of the same workflow id
gets its own row, a retried save of the old run finds the old row, and the old
run's mail is still known as sent.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from steadfast_worker.activities.storage import ReportStore, open_store

pytestmark = pytest.mark.integration

OLD_DDL = (
    """CREATE TABLE IF NOT EXISTS steadfast_reports (
        workflow_id TEXT PRIMARY KEY,
        report_id TEXT NOT NULL UNIQUE,
        run_id TEXT NOT NULL,
        agent TEXT NOT NULL,
        namespace TEXT NOT NULL,
        topic TEXT NOT NULL,
        markdown TEXT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS steadfast_emails (
        workflow_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        recipients TEXT NOT NULL DEFAULT '',
        claimed_at TEXT NOT NULL,
        sent_at TEXT,
        detail TEXT NOT NULL DEFAULT ''
    )""",
)
OLD_ROWS = (
    "INSERT INTO steadfast_reports VALUES ('wf-old', 'report-old', 'run-old', 'agent', 'ns',"
    " 'old topic', '# old report', 0.25, '2026-01-01T00:00:00', '2026-01-01T00:00:00')",
    "INSERT INTO steadfast_emails VALUES ('wf-old', 'sent', 'reviewer@example.test',"
    " '2026-01-01T00:00:01', '2026-01-01T00:00:02', '')",
)


@pytest.fixture(params=["sqlite", "postgres"])
async def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database holding the old schema and one old run; yields the store's DSN ('' = SQLite)."""
    if request.param == "sqlite":
        with sqlite3.connect(tmp_path / "reports.db") as db:
            for stmt in (*OLD_DDL, *OLD_ROWS):
                db.execute(stmt)
        yield ""
        return
    dsn = str(request.getfixturevalue("postgres_dsn"))
    schema = f"migration_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"SET search_path TO {schema}")
        for stmt in (*OLD_DDL, *OLD_ROWS):
            await conn.execute(stmt)
        sep = "&" if "?" in dsn else "?"
        yield f"{dsn}{sep}search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def save(store: ReportStore, run_id: str, report_id: str) -> tuple[str, bool]:
    saved = await store.save_report(
        workflow_id="wf-old",
        report_id=report_id,
        run_id=run_id,
        agent="agent",
        namespace="ns",
        topic="old topic",
        markdown=f"# report of {run_id}",
        cost_usd=0.5,
    )
    return saved.report_id, saved.created


async def test_old_database_is_upgraded_in_place(old_database: str, tmp_path: Path) -> None:
    sqlite_path = str(tmp_path / "reports.db")
    store = await open_store(old_database, sqlite_path)
    try:
        assert await store.count_reports("wf-old") == 1
        # A re-run of the old workflow id: a row of its own; the old row is untouched.
        assert await save(store, "run-new", "report-new") == ("report-new", True)
        assert await store.count_reports("wf-old") == 2
        # The old run retried: its original report id, no new row.
        assert await save(store, "run-old", "report-proposed") == ("report-old", False)
        assert await store.count_reports("wf-old") == 2

        listed = await store.list_reports("wf-old")
        assert [(r.run_id, r.report_id) for r in listed] == [
            ("run-old", "report-old"),
            ("run-new", "report-new"),
        ]
        assert listed[0].markdown == "# old report"
        assert listed[0].cost_usd == 0.25
        assert listed[0].created_at == "2026-01-01T00:00:00"

        # The old claim belongs to the run that saved the old report: still sent, not
        # claimable again; the new run may claim its own.
        assert await store.email_status("wf-old", "run-old") == "sent"
        assert not await store.claim_email("wf-old", "run-old", "reviewer@example.test")
        assert await store.claim_email("wf-old", "run-new", "reviewer@example.test")
        assert not await store.claim_email("wf-old", "run-new", "reviewer@example.test")
    finally:
        await store.close()

    # Every worker start runs the schema setup again: it must change nothing.
    again = await open_store(old_database, sqlite_path)
    try:
        assert await again.count_reports("wf-old") == 2
        assert await save(again, "run-new", "report-other") == ("report-new", False)
        assert await again.email_status("wf-old", "run-new") == "claimed"
    finally:
        await again.close()

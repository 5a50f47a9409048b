"""Where reports and email records live: Postgres in production, SQLite embedded.

Two guarantees of docs/design.md §3 are enforced by the database rather than by hope:

- **One report row per run.** ``reports`` is keyed on the workflow id and saved
  with an upsert, so a retried or repeated ``save_report`` updates the same row
  and returns the report id it was first given.
- **At most one review email per run.** ``emails`` is keyed on the workflow id;
  the email activity *claims* the row before talking to SMTP and marks it sent
  after. See :mod:`steadfast_worker.activities.mail` for the edge case this
  leaves and how it is surfaced.

Both backends speak the same SQL apart from placeholders and timestamps, and
expose the same small :class:`ReportStore` interface.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg

_SCHEMA = (
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

_UPSERT_REPORT = """
INSERT INTO steadfast_reports
    (workflow_id, report_id, run_id, agent, namespace, topic, markdown, cost_usd,
     created_at, updated_at)
VALUES ({p1}, {p2}, {p3}, {p4}, {p5}, {p6}, {p7}, {p8}, {p9}, {p9})
ON CONFLICT (workflow_id) DO UPDATE SET
    run_id = excluded.run_id, topic = excluded.topic, markdown = excluded.markdown,
    cost_usd = excluded.cost_usd, updated_at = excluded.updated_at
RETURNING report_id, created_at = updated_at
"""

# A row marked 'failed' means the SMTP server refused the mail outright, so it
# was certainly not delivered and may be claimed again.
_CLAIM_EMAIL = """
INSERT INTO steadfast_emails (workflow_id, status, recipients, claimed_at)
VALUES ({p1}, 'claimed', {p2}, {p3})
ON CONFLICT (workflow_id) DO UPDATE SET
    status = 'claimed', recipients = excluded.recipients, claimed_at = excluded.claimed_at
WHERE steadfast_emails.status = 'failed'
RETURNING workflow_id
"""

_MARK_EMAIL = (
    "UPDATE steadfast_emails SET status = {p2}, sent_at = {p3}, detail = {p4} "
    "WHERE workflow_id = {p1}"
)
_EMAIL_STATUS = "SELECT status FROM steadfast_emails WHERE workflow_id = {p1}"
_COUNT_REPORTS = "SELECT count(*) FROM steadfast_reports WHERE workflow_id = {p1}"


#: Placeholders ``{p1}``..``{p9}`` of the templates above, per driver (built once).
_MARKS: dict[str, dict[str, str]] = {
    style: {f"p{i}": (f"${i}" if style == "pg" else f":p{i}") for i in range(1, 10)}
    for style in ("pg", "sqlite")
}


def _sql(template: str, style: str) -> str:
    return template.format(**_MARKS[style])


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class SavedReport:
    report_id: str
    created: bool


class ReportStore(Protocol):
    """The persistence the activities need, whatever the backend."""

    backend: str

    async def save_report(
        self,
        *,
        workflow_id: str,
        report_id: str,
        run_id: str,
        agent: str,
        namespace: str,
        topic: str,
        markdown: str,
        cost_usd: float,
    ) -> SavedReport: ...

    async def claim_email(self, workflow_id: str, recipients: str) -> bool:
        """True if this caller now owns the right to send; False if already claimed."""
        ...

    async def mark_email(self, workflow_id: str, status: str, detail: str = "") -> None: ...

    async def email_status(self, workflow_id: str) -> str | None: ...

    async def count_reports(self, workflow_id: str) -> int: ...

    async def close(self) -> None: ...


class PostgresStore:
    """asyncpg pool; the production backend."""

    backend = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str) -> PostgresStore:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=5)
        # Two workers creating the schema at once race on the catalog; the
        # advisory lock serialises them.
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7364021)")
            for stmt in _SCHEMA:
                await conn.execute(stmt)
        return cls(pool)

    async def _fetchrow(self, template: str, *args: Any) -> Any:
        return await self._pool.fetchrow(_sql(template, "pg"), *args)

    async def save_report(self, **kw: Any) -> SavedReport:
        row = await self._fetchrow(
            _UPSERT_REPORT,
            kw["workflow_id"],
            kw["report_id"],
            kw["run_id"],
            kw["agent"],
            kw["namespace"],
            kw["topic"],
            kw["markdown"],
            kw["cost_usd"],
            _now(),
        )
        return SavedReport(str(row[0]), bool(row[1]))

    async def claim_email(self, workflow_id: str, recipients: str) -> bool:
        row = await self._fetchrow(_CLAIM_EMAIL, workflow_id, recipients, _now())
        return row is not None

    async def mark_email(self, workflow_id: str, status: str, detail: str = "") -> None:
        await self._pool.execute(_sql(_MARK_EMAIL, "pg"), workflow_id, status, _now(), detail)

    async def email_status(self, workflow_id: str) -> str | None:
        row = await self._fetchrow(_EMAIL_STATUS, workflow_id)
        return None if row is None else str(row[0])

    async def count_reports(self, workflow_id: str) -> int:
        row = await self._fetchrow(_COUNT_REPORTS, workflow_id)
        return int(row[0])

    async def close(self) -> None:
        await self._pool.close()


class SqliteStore:
    """One aiosqlite connection per call: the embedded default for ``steadfast dev``.

    SQLite serialises writers itself; WAL mode lets ``steadfast status`` read
    while a worker writes, and the busy timeout rides out concurrent workers.
    """

    backend = "sqlite"

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        store = cls(path)
        async with store._connect() as db:
            await db.execute("PRAGMA journal_mode=WAL")
            for stmt in _SCHEMA:
                await db.execute(stmt)
            await db.commit()
        return store

    def _connect(self) -> aiosqlite.Connection:
        return aiosqlite.connect(self._path, timeout=30.0)

    async def _write(self, template: str, params: dict[str, Any]) -> Any:
        async with self._lock, self._connect() as db:
            cursor = await db.execute(_sql(template, "sqlite"), params)
            row = await cursor.fetchone()
            await db.commit()
            return row

    async def save_report(self, **kw: Any) -> SavedReport:
        row = await self._write(
            _UPSERT_REPORT,
            {
                "p1": kw["workflow_id"],
                "p2": kw["report_id"],
                "p3": kw["run_id"],
                "p4": kw["agent"],
                "p5": kw["namespace"],
                "p6": kw["topic"],
                "p7": kw["markdown"],
                "p8": kw["cost_usd"],
                "p9": _now(),
            },
        )
        return SavedReport(str(row[0]), bool(row[1]))

    async def claim_email(self, workflow_id: str, recipients: str) -> bool:
        row = await self._write(_CLAIM_EMAIL, {"p1": workflow_id, "p2": recipients, "p3": _now()})
        return row is not None

    async def mark_email(self, workflow_id: str, status: str, detail: str = "") -> None:
        await self._write(
            _MARK_EMAIL, {"p1": workflow_id, "p2": status, "p3": _now(), "p4": detail}
        )

    async def _read(self, template: str, params: dict[str, Any]) -> Any:
        async with self._connect() as db:
            cursor = await db.execute(_sql(template, "sqlite"), params)
            return await cursor.fetchone()

    async def email_status(self, workflow_id: str) -> str | None:
        row = await self._read(_EMAIL_STATUS, {"p1": workflow_id})
        return None if row is None else str(row[0])

    async def count_reports(self, workflow_id: str) -> int:
        row = await self._read(_COUNT_REPORTS, {"p1": workflow_id})
        return int(row[0]) if row is not None else 0

    async def close(self) -> None:
        return None


async def open_store(postgres_dsn: str, sqlite_path: str) -> ReportStore:
    """Postgres when a DSN is given, else SQLite at ``sqlite_path``."""
    if postgres_dsn:
        return await PostgresStore.open(postgres_dsn)
    return await SqliteStore.open(sqlite_path)

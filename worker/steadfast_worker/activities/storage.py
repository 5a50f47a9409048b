"""Where reports and email records live: Postgres in production, SQLite embedded.

Two guarantees of docs/design.md §3 are enforced by the database rather than by hope:

- **One report row per run.** ``reports`` is keyed on the workflow id and the run
  id and saved with an upsert, so a retried ``save_report`` finds its run's row
  and returns the report id it was first given, while a re-run of the same
  workflow id (``--rerun``, a Schedule) adds a row of its own and leaves the
  earlier ones as they were; :meth:`ReportStore.list_reports` lists them.
- **At most one review email per run.** ``emails`` is keyed on the workflow id and
  the run id; the email activity *claims* the row before talking to SMTP and marks
  it sent after. See :mod:`steadfast_worker.activities.mail` for the edge case
  this leaves and how it is surfaced.

The tables, and the in-place upgrade of databases made when both were keyed by
workflow id alone, are in :mod:`steadfast_worker.activities.schema`.

Both backends speak the same SQL apart from placeholders and timestamps, and
expose the same small :class:`ReportStore` interface: Postgres here, SQLite in
:mod:`steadfast_worker.activities.sqlitestore`, the rows they return in
:mod:`steadfast_worker.activities.reportrows`; :func:`open_store` picks one.
"""

from __future__ import annotations

__all__ = [
    "NoReportStoreError",
    "PostgresStore",
    "ReportStore",
    "SavedReport",
    "SqliteStore",
    "StoredReport",
    "UnfitStoreError",
    "open_store",
]

from typing import Any, Protocol

import asyncpg

from steadfast_worker.activities import schema
from steadfast_worker.activities.reportrows import SavedReport, StoredReport, now_iso
from steadfast_worker.activities.sqlitestore import SqliteStore
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
        conversation: str = "",
    ) -> SavedReport:
        """Upsert the run's report; with ``conversation``, delete that transcript in
        the same transaction (a deep run's loop is over once its report is saved)."""
        ...

    async def claim_email(self, workflow_id: str, run_id: str, recipients: str) -> bool:
        """True if this caller now owns the right to send this run's mail; False if
        already claimed."""
        ...

    async def mark_email(
        self, workflow_id: str, run_id: str, status: str, detail: str = ""
    ) -> None: ...

    async def email_status(self, workflow_id: str, run_id: str) -> str | None: ...

    async def count_reports(self, workflow_id: str) -> int:
        """Reports saved under this workflow id, one per run that saved."""
        ...

    async def list_reports(self, workflow_id: str) -> list[StoredReport]:
        """Every run's report under this workflow id, and under the ids of the runs its
        Schedule started (``<id>-<scheduled time>``), oldest first."""
        ...

    async def get_report(self, report_id: str) -> StoredReport | None:
        """The report saved under ``report_id`` (``steadfast report``), if any."""
        ...

    async def put_part(self, conversation: str, turn: int, part: str, body: str) -> bool:
        """Store one part of a deep run's transcript, unless it is already there;
        whether this call stored it."""
        ...

    async def get_parts(self, conversation: str, upto_turn: int) -> list[tuple[int, str, str]]:
        """(turn, part, body) of the transcript up to ``upto_turn``, in turn order."""
        ...

    async def get_part(self, conversation: str, turn: int, part: str) -> str | None:
        """One part's body, or None when it was never stored."""
        ...

    async def idle_conversations(self, before: str, after: str, limit: int) -> list[str]:
        """Up to ``limit`` transcripts nothing was written to since ``before`` (ISO time),
        the first after ``after`` in key order."""
        ...

    async def forget_transcript(self, conversation: str) -> None: ...

    async def close(self) -> None: ...


#: Server encodings that keep any text a report may hold. In any other (LATIN1,
#: WIN1252, ...) the first em dash or name in another script is refused, for good,
#: after the run has paid for the report. SQL_ASCII stores the UTF-8 bytes asyncpg
#: sends as they are.
FIT_ENCODINGS = ("UTF8", "SQL_ASCII")


class UnfitStoreError(Exception):
    """The store is reachable, but cannot keep every report: a setup to change, not an
    outage to wait out."""


class StoreSetupRefusedError(Exception):
    """The store's tables are missing or older than this release, and the role the DSN
    names may not create or change them: the database's owner must run the setup (a
    worker started with the owner's DSN once), or grant the role ``CREATE`` on the
    schema. Not an :class:`UnfitStoreError`: a grant lets the next attempt save, so a
    save retries it; a starting worker refuses it."""


def encoding_problem(encoding: str) -> str | None:
    """Why a database of ``encoding`` cannot be the report store, or ``None``."""
    if encoding.upper() in FIT_ENCODINGS:
        return None
    return (
        f"the database's encoding is {encoding}, which cannot hold every report (an em "
        "dash, a name in another script): use a database created with ENCODING 'UTF8'"
    )


class PostgresStore:
    """asyncpg pool; the production backend."""

    backend = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str) -> PostgresStore:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=5)
        try:
            problem = encoding_problem(str(await pool.fetchval("SHOW server_encoding")))
            if problem:
                raise UnfitStoreError(problem)
            async with pool.acquire() as conn:
                if not await schema.postgres_is_current(conn):
                    # Two workers creating the schema at once race on the catalog;
                    # the advisory lock serialises them.
                    try:
                        async with conn.transaction():
                            await conn.execute("SELECT pg_advisory_xact_lock(7364021)")
                            await schema.setup_postgres(conn)
                    except asyncpg.InsufficientPrivilegeError as err:
                        raise StoreSetupRefusedError(
                            "the report tables are missing or from an earlier release, and "
                            f"this role may not create or change them ({err}): run the "
                            "setup once as the database's owner (start one worker with the "
                            "owner's DSN), or grant this role CREATE on the schema"
                        ) from None
        except BaseException:
            # Every activity attempt opens the store again while it fails (a save
            # retries for storage.saveTimeout): a pool left open each time would use
            # up the database's connections, and other agents on it could not save.
            pool.terminate()
            raise
        return cls(pool)

    async def _fetchrow(self, template: str, *args: Any) -> Any:
        return await self._pool.fetchrow(sql(template, "pg"), *args)

    async def save_report(self, **kw: Any) -> SavedReport:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                sql(UPSERT_REPORT, "pg"),
                kw["workflow_id"],
                kw["report_id"],
                kw["run_id"],
                kw["agent"],
                kw["namespace"],
                kw["topic"],
                kw["markdown"],
                kw["cost_usd"],
                now_iso(),
            )
            if kw.get("conversation"):
                await conn.execute(sql(FORGET_TRANSCRIPT, "pg"), kw["conversation"])
        assert row is not None  # RETURNING answers both the insert and the update
        return SavedReport(str(row[0]), bool(row[1]))

    async def claim_email(self, workflow_id: str, run_id: str, recipients: str) -> bool:
        row = await self._fetchrow(CLAIM_EMAIL, workflow_id, run_id, recipients, now_iso())
        return row is not None

    async def mark_email(
        self, workflow_id: str, run_id: str, status: str, detail: str = ""
    ) -> None:
        await self._pool.execute(
            sql(MARK_EMAIL, "pg"), workflow_id, run_id, status, now_iso(), detail
        )

    async def email_status(self, workflow_id: str, run_id: str) -> str | None:
        row = await self._fetchrow(EMAIL_STATUS, workflow_id, run_id)
        return None if row is None else str(row[0])

    async def count_reports(self, workflow_id: str) -> int:
        row = await self._fetchrow(COUNT_REPORTS, workflow_id)
        return int(row[0])

    async def list_reports(self, workflow_id: str) -> list[StoredReport]:
        pattern = scheduled_runs_pattern(workflow_id)
        rows = await self._pool.fetch(sql(LIST_REPORTS, "pg"), workflow_id, pattern)
        return [StoredReport.from_row(r) for r in rows]

    async def get_report(self, report_id: str) -> StoredReport | None:
        row = await self._fetchrow(GET_REPORT, report_id)
        return None if row is None else StoredReport.from_row(row)

    async def put_part(self, conversation: str, turn: int, part: str, body: str) -> bool:
        done = await self._pool.execute(
            sql(PUT_PART, "pg"), conversation, turn, part, body, now_iso()
        )
        return done == "INSERT 0 1"

    async def get_parts(self, conversation: str, upto_turn: int) -> list[tuple[int, str, str]]:
        rows = await self._pool.fetch(sql(GET_PARTS, "pg"), conversation, upto_turn)
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def get_part(self, conversation: str, turn: int, part: str) -> str | None:
        row = await self._fetchrow(GET_PART, conversation, turn, part)
        return None if row is None else str(row[0])

    async def idle_conversations(self, before: str, after: str, limit: int) -> list[str]:
        rows = await self._pool.fetch(sql(IDLE_CONVERSATIONS, "pg"), before, after, limit)
        return [str(r[0]) for r in rows]

    async def forget_transcript(self, conversation: str) -> None:
        await self._pool.execute(sql(FORGET_TRANSCRIPT, "pg"), conversation)

    async def close(self) -> None:
        await self._pool.close()


class NoReportStoreError(RuntimeError):
    """Neither a Postgres DSN nor a SQLite file: nowhere a report may be written.

    The operator renders no SQLite file (a pod's disk goes with the pod), so a
    worker whose DSN variable is empty saves nothing rather than something that
    would be lost; the save waits, naming this class, until a DSN is given.
    """


async def open_store(postgres_dsn: str, sqlite_path: str) -> ReportStore:
    """Postgres when a DSN is given, else SQLite at ``sqlite_path``; else
    :class:`NoReportStoreError`."""
    if postgres_dsn:
        return await PostgresStore.open(postgres_dsn)
    if not sqlite_path:
        raise NoReportStoreError("no Postgres DSN is set and no SQLite file is configured")
    return await SqliteStore.open(sqlite_path)

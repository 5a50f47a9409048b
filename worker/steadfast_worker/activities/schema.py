"""The report database's tables, and the upgrade of databases made by older releases.

Reports and email claims are keyed by workflow id **and run id**: a re-run
(``steadfast run --rerun``, a Schedule firing again) starts a new run under the
same workflow id, and each run keeps its own report and sends its own mail.
Releases before that keyed both tables by workflow id alone. The setup here runs
on every worker start, inside one transaction that other workers wait for, and
brings such a database to the current keys in place:

- ``steadfast_reports``: rows keep their report ids and run ids; the primary key
  becomes ``(workflow_id, run_id)``.
- ``steadfast_emails``: gains ``run_id``; an old claim is given the run id of the
  workflow's saved report (the old code overwrote that row on every save, so it
  names the last run that saved, the one whose mail the claim was for), so that
  run is not mailed again when its attempt is retried on the new worker.

A database already in the current shape is left alone, so the setup is idempotent.
"""

from __future__ import annotations

from typing import Any

import aiosqlite

REPORTS = "steadfast_reports"
EMAILS = "steadfast_emails"
TRANSCRIPTS = "steadfast_transcripts"
KEY = ("workflow_id", "run_id")

_REPORTS_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    report_id TEXT NOT NULL UNIQUE,
    agent TEXT NOT NULL,
    namespace TEXT NOT NULL,
    topic TEXT NOT NULL,
    markdown TEXT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (workflow_id, run_id)
)"""

_EMAILS_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    recipients TEXT NOT NULL DEFAULT '',
    claimed_at TEXT NOT NULL,
    sent_at TEXT,
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (workflow_id, run_id)
)"""

#: A deep run's conversation, one row per assistant reply and per tool result, so the
#: prompt of each turn is read from here rather than carried through workflow history.
TRANSCRIPTS_DDL = f"""CREATE TABLE IF NOT EXISTS {TRANSCRIPTS} (
    conversation TEXT NOT NULL,
    turn INTEGER NOT NULL,
    part TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (conversation, turn, part)
)"""

_REPORT_COLUMNS = (
    "workflow_id, run_id, report_id, agent, namespace, topic, markdown, cost_usd, "
    "created_at, updated_at"
)
_EMAIL_COLUMNS = "workflow_id, status, recipients, claimed_at, sent_at, detail"

#: Old email claims take the run id of the workflow's one saved report, or '' without one.
_OLD_CLAIM_RUN = (
    f"COALESCE((SELECT r.run_id FROM {REPORTS} r WHERE r.workflow_id = e.workflow_id "
    "ORDER BY r.created_at LIMIT 1), '')"
)


def create_statements(reports: str = REPORTS, emails: str = EMAILS) -> tuple[str, str]:
    return _REPORTS_DDL.format(table=reports), _EMAILS_DDL.format(table=emails)


# --- Postgres ---------------------------------------------------------------------------

_PG_PRIMARY_KEY = """
SELECT c.conname, array_agg(a.attname::text ORDER BY a.attnum)
FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
WHERE c.conrelid = to_regclass($1) AND c.contype = 'p'
GROUP BY c.conname
"""


async def _pg_rekey(conn: Any, table: str) -> bool:
    """Make ``(workflow_id, run_id)`` the primary key; False when it already was."""
    row = await conn.fetchrow(_PG_PRIMARY_KEY, table)
    if row is not None and tuple(row[1]) == KEY:
        return False
    if row is not None:
        await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{row[0]}"')
    await conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (workflow_id, run_id)")
    return True


async def postgres_is_current(conn: Any) -> bool:
    """Whether every table is there with the current keys: the setup has nothing to do
    then, and runs no DDL, so a role that may not create tables (a database its DBA set
    up, the tables made by another role) can be the store."""
    for table in (REPORTS, EMAILS):
        row = await conn.fetchrow(_PG_PRIMARY_KEY, table)
        if row is None or tuple(row[1]) != KEY:
            return False
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", TRANSCRIPTS))


async def setup_postgres(conn: Any) -> None:
    """Create or upgrade the tables; the caller holds a transaction."""
    for stmt in (*create_statements(), TRANSCRIPTS_DDL):
        await conn.execute(stmt)
    await _pg_rekey(conn, REPORTS)
    await conn.execute(
        f"ALTER TABLE {EMAILS} ADD COLUMN IF NOT EXISTS run_id TEXT NOT NULL DEFAULT ''"
    )
    if await _pg_rekey(conn, EMAILS):
        await conn.execute(f"UPDATE {EMAILS} e SET run_id = {_OLD_CLAIM_RUN} WHERE e.run_id = ''")


# --- SQLite -----------------------------------------------------------------------------


async def _sqlite_key(db: aiosqlite.Connection, table: str) -> tuple[str, ...]:
    """The table's primary-key columns in key order; () when the table does not exist."""
    cursor = await db.execute(f"PRAGMA table_info({table})")
    columns = [(int(row[5]), str(row[1])) for row in await cursor.fetchall() if int(row[5])]
    return tuple(name for _, name in sorted(columns))


async def setup_sqlite(db: aiosqlite.Connection) -> None:
    """Create or upgrade the tables in one ``BEGIN IMMEDIATE`` transaction.

    SQLite cannot change a primary key in place: an old table is copied into a
    new one with the current key, which then takes the old one's name.
    ``db`` must be in autocommit mode (``isolation_level=None``).
    """
    await db.execute("BEGIN IMMEDIATE")
    try:
        if await _sqlite_key(db, REPORTS) not in ((), KEY):
            new = f"{REPORTS}_by_run"
            await db.execute(create_statements(reports=new)[0])
            await db.execute(
                f"INSERT INTO {new} ({_REPORT_COLUMNS}) SELECT {_REPORT_COLUMNS} FROM {REPORTS}"
            )
            await db.execute(f"DROP TABLE {REPORTS}")
            await db.execute(f"ALTER TABLE {new} RENAME TO {REPORTS}")
        if await _sqlite_key(db, EMAILS) not in ((), KEY):
            new = f"{EMAILS}_by_run"
            await db.execute(create_statements(emails=new)[1])
            await db.execute(
                f"INSERT INTO {new} (run_id, {_EMAIL_COLUMNS}) "
                f"SELECT {_OLD_CLAIM_RUN}, {_EMAIL_COLUMNS} FROM {EMAILS} e"
            )
            await db.execute(f"DROP TABLE {EMAILS}")
            await db.execute(f"ALTER TABLE {new} RENAME TO {EMAILS}")
        for stmt in (*create_statements(), TRANSCRIPTS_DDL):
            await db.execute(stmt)
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise

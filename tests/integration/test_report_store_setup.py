"""A report store whose setup fails leaves no connection behind.

Every activity attempt that needs the store opens it again while it cannot be
set up (a save retries for ``storage.saveTimeout``, a week by default): a database
in read-only mode (a standby a name still points at after a failover), or a role
that may not create the tables. Each failed open used to leave its pool's
connection open, until the database's connection limit was used up and every
other agent sharing the database could no longer save its paid reports.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from steadfast_worker.activities.storage import PostgresStore

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]


@asynccontextmanager
async def read_only_database(admin_dsn: str) -> AsyncIterator[tuple[str, str]]:
    """A new database whose transactions are read-only; its name and DSN."""
    name = f"steadfast_ro_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        await admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        head, _, _ = admin_dsn.rpartition("/")
        yield name, f"{head}/{name}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def connections_to(admin_dsn: str, database: str) -> int:
    admin = await asyncpg.connect(admin_dsn)
    try:
        count: int = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
        return count
    finally:
        await admin.close()


async def test_a_store_that_cannot_be_set_up_leaves_no_connection_open(postgres_dsn: str) -> None:
    async with read_only_database(postgres_dsn) as (name, dsn):
        for _ in range(5):
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await PostgresStore.open(dsn)
        assert await connections_to(postgres_dsn, name) == 0


async def test_a_store_whose_tables_are_current_opens_without_ddl(postgres_dsn: str) -> None:
    """Tables made once (by a worker, or by the database's owner), then a connection
    that may not change the schema (here: every transaction read-only; likewise a role
    with no CREATE on the schema, which a DBA-provisioned database gives): the store
    opens and reads. The old setup ran its CREATE ... IF NOT EXISTS on every open, and
    such a store could never be opened at all."""
    async with read_only_database(postgres_dsn) as (name, dsn):
        admin = await asyncpg.connect(postgres_dsn)
        try:
            await admin.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
            await (await PostgresStore.open(dsn)).close()  # the tables, made once
            await admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        finally:
            await admin.close()
        store = await PostgresStore.open(dsn)
        try:
            assert await store.list_reports("research-x-y-topic-0123456789") == []
        finally:
            await store.close()

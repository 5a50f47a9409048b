"""A report store whose setup fails leaves no connection behind.

Every activity attempt that needs the store opens it again while it cannot be
set up (a save retries for ``storage.saveTimeout``, a week by default): a database
in read-only mode (a standby a name still points at after a failover), or a role
that may not create the tables. Each failed open used to leave its pool's
connection open, until the database's connection limit was used up and every
other agent sharing the database could no longer save its paid reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from tests.integration.conftest import PG_DSN_ENV, HarnessFactory, base_config

from steadfast_dev.processes import steadfast_command
from steadfast_worker.activities.storage import PostgresStore, StoreSetupRefusedError

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


@asynccontextmanager
async def role_without_create(admin_dsn: str) -> AsyncIterator[tuple[str, str]]:
    """A new database, owned by the test role, and a role that may connect to it but
    create nothing in its schema (the default from PostgreSQL 15 for all but the owner); the
    database's name and the DSN of that role."""
    suffix = uuid.uuid4().hex[:8]
    name, role = f"steadfast_dba_{suffix}", f"steadfast_app_{suffix}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'app-{suffix}'")
        head, _, _ = admin_dsn.rpartition("/")
        scheme, _, at_host = head.partition("://")
        host = at_host.rpartition("@")[2]
        yield name, f"{scheme}://{role}:app-{suffix}@{host}/{name}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def test_a_store_this_role_may_not_set_up_is_refused_with_the_fix(
    postgres_dsn: str,
) -> None:
    """Tables missing, and a role with no CREATE on the schema: the open fails with what
    to do (run the setup as the owner, or grant CREATE), not Postgres's bare refusal, so
    a starting worker can refuse it (``test_a_worker_refuses_…`` below)."""
    async with role_without_create(postgres_dsn) as (name, dsn):
        for _ in range(3):
            with pytest.raises(StoreSetupRefusedError) as err:
                await PostgresStore.open(dsn)
            assert "permission denied" in str(err.value)
            assert "as the database's owner" in str(err.value)
            assert "grant this role CREATE" in str(err.value)
        assert await connections_to(postgres_dsn, name) == 0


async def test_a_worker_refuses_to_start_on_a_store_this_role_may_not_set_up(
    harness: HarnessFactory, postgres_dsn: str, temporal_address: str, tmp_path: Path
) -> None:
    """The worker used to warn and poll: every run then paid for its research and
    failed to save it until ``storage.saveTimeout`` ran out. It exits 2, saying why."""
    async with (
        role_without_create(postgres_dsn) as (_, dsn),
        harness(postgres_dsn=dsn, start_worker=False) as h,
    ):
        doc = base_config(h.sim, h.task_queue, Path(h.config.storage.sqlite_path))
        config = tmp_path / "worker.json"
        config.write_text(json.dumps(doc))
        argv = ["worker", "--config", str(config), "--address", temporal_address]
        proc = await asyncio.create_subprocess_exec(
            *steadfast_command(*argv),
            env={**os.environ, **h.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:  # it did not refuse: stop it
                proc.kill()
                await proc.wait()
        said = err.decode()
        assert proc.returncode == 2, said
        assert "may not create or change them" in said
        assert PG_DSN_ENV in said  # which setting it is
        assert "app-" not in said  # the password is never told


async def test_the_owner_sets_up_once_and_the_role_then_opens_the_store(
    postgres_dsn: str,
) -> None:
    """The fix the refusal names works: the owner's open makes the tables, and the role
    without CREATE then opens the store (with read and write rights granted)."""
    async with role_without_create(postgres_dsn) as (name, dsn):
        head, _, _ = postgres_dsn.rpartition("/")
        await (await PostgresStore.open(f"{head}/{name}")).close()
        owner = await asyncpg.connect(f"{head}/{name}")
        try:
            role = dsn.partition("://")[2].partition(":")[0]
            await owner.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
            )
        finally:
            await owner.close()
        store = await PostgresStore.open(dsn)
        try:
            assert await store.list_reports("research-x-y-topic-0123456789") == []
        finally:
            await store.close()

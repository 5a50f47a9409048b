"""A report store that cannot keep every report is refused before a run pays for one.

A Postgres database in LATIN1 (or any encoding but UTF-8) refuses, for good, a
report holding an em dash or a name in another script. The save used to take that
for an outage and wait ``storage.saveTimeout`` (a week by default), and the run then
failed with its paid report unsaved; ASCII reports saved, so nothing warned. Now
``steadfast worker`` refuses to start on such a database (exit 2, naming the
encoding), and a store an activity opens fails at once as ``Misconfigured``. A
SQL_ASCII database keeps the UTF-8 bytes it is given, and is accepted.
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
from tests.support.temporal import failure_of

from steadfast_contract import errortypes
from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_dev.processes import steadfast_command

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

EM_DASH_REPORT = "Growth slowed \u2014 analysts \u201cexpect\u201d more from \u5317\u4eac"


@asynccontextmanager
async def database(admin_dsn: str, encoding: str) -> AsyncIterator[str]:
    """A new database in ``encoding`` on the test Postgres; its DSN."""
    name = f"steadfast_{encoding.lower()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(
        f"CREATE DATABASE {name} ENCODING '{encoding}' "
        "LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    )
    base, _, rest = admin_dsn.rpartition("/")
    query = "?" + rest.partition("?")[2] if "?" in rest else ""
    try:
        yield f"{base}/{name}{query}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_a_worker_refuses_to_start_on_a_latin1_store(
    harness: HarnessFactory, postgres_dsn: str, temporal_address: str, tmp_path: Path
) -> None:
    async with (
        database(postgres_dsn, "LATIN1") as dsn,
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
        assert "encoding is LATIN1" in said
        assert "ENCODING 'UTF8'" in said
        assert PG_DSN_ENV in said  # which setting to change
        assert "postgresql://" not in said  # the DSN is never told


async def test_a_run_on_a_latin1_store_fails_at_once_as_misconfigured(
    harness: HarnessFactory, postgres_dsn: str
) -> None:
    # The in-process worker skips the start-up check, as one started while the store
    # was down would: the save itself must not wait out saveTimeout (a week here).
    async with (
        database(postgres_dsn, "LATIN1") as dsn,
        harness({"storage": {"saveTimeout": "168h"}}, postgres_dsn=dsn) as h,
    ):
        h.sim.set_faults({"llm": {"says": EM_DASH_REPORT}})
        handle = await h.start("a report with an em dash")
        cause = await asyncio.wait_for(failure_of(handle), 30)
        assert cause.type == errortypes.MISCONFIGURED
        assert "encoding is LATIN1" in cause.message
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.phase == Phase.FAILED
        assert "encoding is LATIN1" in status.message


async def test_a_sql_ascii_store_keeps_a_report_with_an_em_dash(
    harness: HarnessFactory, postgres_dsn: str
) -> None:
    async with (
        database(postgres_dsn, "SQL_ASCII") as dsn,
        harness(postgres_dsn=dsn) as h,
    ):
        h.sim.set_faults({"llm": {"says": EM_DASH_REPORT}})
        result = await h.run("a report with an em dash")
        assert result.status.phase == Phase.COMPLETED
        store = await h.store()
        try:
            (saved,) = await store.list_reports(h.workflow_id("a report with an em dash"))
        finally:
            await store.close()
        assert EM_DASH_REPORT in saved.markdown

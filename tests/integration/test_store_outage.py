"""A paid report is never thrown away by a report-store outage (docs/design.md §3).

Postgres (a throwaway server of this test's own, so the session's shared one
stays up) is held down for two minutes while a run is in ``Saving``: the run
waits with a visible message naming the error class (never the DSN), then
completes once the store is back, with its report in the store and every LLM
request served exactly once (the simulator's request log).
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from temporalio.client import WorkflowFailureError
from tests.integration.conftest import HarnessFactory
from tests.support.pgserver import throwaway_postgres
from tests.support.sim import SimHandle

from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

OUTAGE = 120.0


async def reports_of(dsn: str, workflow_id: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT run_id, markdown FROM steadfast_reports WHERE workflow_id = $1", workflow_id
        )
    finally:
        await conn.close()
    return [(str(r[0]), str(r[1])) for r in rows]


async def test_postgres_down_two_minutes_during_saving(
    harness: HarnessFactory, sim: SimHandle
) -> None:
    with throwaway_postgres() as pg:
        # The database policy's own attempts take about a second here: the rest of the
        # outage is the wait for the store.
        async with harness(postgres_dsn=pg.dsn) as h:
            # A first run opens the worker's pool: the outage hits live connections.
            warm = await h.run("warm the pool")
            assert warm.status.phase == Phase.COMPLETED

            # Paid for, then the store goes: the LLM calls are done before Saving.
            await asyncio.to_thread(pg.stop)
            down_at = time.monotonic()
            sim.reset()
            handle = await h.start("outage during saving")

            async def waiting() -> RunStatus:
                while True:
                    st: RunStatus = await handle.query(STATUS_QUERY, result_type=RunStatus)
                    if st.phase == Phase.SAVING and st.message:
                        return st
                    assert not Phase(st.phase).terminal, f"run ended during the outage: {st}"
                    await asyncio.sleep(0.5)

            seen = await asyncio.wait_for(waiting(), 60)
            assert seen.message.startswith("waiting for the report store: "), seen.message
            cls = seen.message.removeprefix("waiting for the report store: ")
            assert cls  # an error class, nothing else
            assert " " not in cls
            for piece in (pg.dsn, "throwaway", str(pg.port), "127.0.0.1"):
                assert piece not in seen.message

            # Held down for two minutes; the run is still waiting at the end of them.
            await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
            st = await handle.query(STATUS_QUERY, result_type=RunStatus)
            assert st.phase == Phase.SAVING
            assert st.message.startswith("waiting for the report store: ")
            await asyncio.to_thread(pg.start)

            # Back: the next attempt (at most 30 s later) saves, and the run completes.
            result = await asyncio.wait_for(handle.result(), 90)
            assert result.status.phase == Phase.COMPLETED
            assert result.status.report_id
            assert not result.status.message.startswith("waiting")
            saved = await reports_of(pg.dsn, handle.id)
            assert [run for run, _ in saved] == [handle.result_run_id]
            assert len(saved[0][1]) == result.report_markdown_chars

            # No LLM request was sent twice: two calls (queries, report), each served once.
            served = sim.served("llm")
            assert len(served) == 2, served
            assert set(served.values()) == {1}
            assert sum(sim.attempts("llm").values()) == 2


async def test_a_worker_with_no_store_waits_then_fails_at_the_save_timeout(
    harness: HarnessFactory, sim: SimHandle
) -> None:
    """As the operator renders workers: no SQLite file, and here an empty DSN. Nothing is
    written where it could be lost; the save waits for a store, up to storage.saveTimeout."""
    overrides = {"storage": {"sqlitePath": "", "saveTimeout": "8s"}}
    async with harness(overrides) as h:
        started = time.monotonic()
        handle = await h.start("nowhere to save")

        async def waiting() -> RunStatus:
            while True:
                st: RunStatus = await handle.query(STATUS_QUERY, result_type=RunStatus)
                if st.phase == Phase.SAVING and st.message:
                    return st
                await asyncio.sleep(0.3)

        seen = await asyncio.wait_for(waiting(), 30)
        assert seen.message == "waiting for the report store: NoReportStoreError"
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 60)
        assert time.monotonic() - started >= 8
        assert "NoReportStoreError" in str(failed.value.cause)
        final = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert final.phase == Phase.FAILED
        # Paid once: the report is in the run's history, no LLM call was repeated.
        assert set(sim.served("llm").values()) == {1}

"""A run cancelled while one of its activities runs ends ``Cancelled``.

The cancel reaches the step it interrupts (an LLM call, a deep turn) as a failed
activity whose cause is a ``CancelledError``. The workflow took that for a failure of
the step: the run ended ``Failed`` with "Activity cancelled", counted among failed
runs and alerted on as one, although a user had asked for it to stop.

What a run cancelled before its report had paid to gather (a deep run's findings,
the pipeline's sources once its report is being written) is saved as an unfinished
report, never mailed, as a run stopped by its budget or a failed step keeps it: a
cancelled run used to end with it only in workflow state.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import WorkflowFailureError
from tests.integration.conftest import Harness, HarnessFactory
from tests.integration.test_deep_agent import deep, plan
from tests.support.sim import wait_for_report_call

from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_operator import workflows as operator_workflows
from steadfast_worker.activities.storage import StoredReport

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def saved(h: Harness, workflow_id: str) -> list[StoredReport]:
    store = await h.store()
    try:
        return await store.list_reports(workflow_id)
    finally:
        await store.close()


async def kept_unmailed(h: Harness, workflow_id: str, status: RunStatus, section: str) -> None:
    """The cancelled run saved one unfinished report holding ``section``, named in its
    status, and mailed nobody."""
    (report,) = await saved(h, workflow_id)
    assert report.report_id == status.report_id
    assert status.message == (
        f"cancelled; what the run gathered is saved as report {report.report_id}; "
        "no review mail was sent"
    )
    assert "the run was cancelled" in report.markdown
    assert f"## {section}" in report.markdown
    assert any(line[:1].isdigit() for line in report.markdown.splitlines())
    assert status.email != "sent"
    assert h.smtp.messages_for(workflow_id) == []


@pytest.mark.parametrize("strategy", ["pipeline", "deep"])
async def test_a_run_cancelled_during_an_llm_call_ends_cancelled(
    harness: HarnessFactory, strategy: str
) -> None:
    overrides = deep(20) if strategy == "deep" else {}
    async with harness(overrides) as h:
        slow = {"latency_ms": 1500}
        h.sim.set_faults(plan(20, **slow) if strategy == "deep" else {"llm": slow})
        handle = await h.start(f"cancelled mid-step {strategy} {uuid.uuid4().hex[:6]}")
        # Deep: in a turn after it recorded a finding; pipeline: generating queries.
        wanted = 1 if strategy == "deep" else 0
        for _ in range(300):
            status = await handle.query(STATUS_QUERY, result_type=RunStatus)
            if status.findings >= wanted and status.phase in (
                Phase.RESEARCHING,
                Phase.GENERATING_QUERIES,
            ):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"the run never reached its LLM call: {status}")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.phase == Phase.CANCELLED, status.message
        if strategy == "deep":  # findings recorded by then: kept
            await kept_unmailed(h, handle.id, status, "Findings recorded")
        else:  # cancelled while generating queries: nothing gathered, nothing saved
            assert status.message == "cancelled"
            assert await saved(h, handle.id) == []
        asked = len(h.sim.entries("llm"))
        await asyncio.sleep(0.5)
        assert len(h.sim.entries("llm")) == asked  # nothing is asked after the end
        assert h.smtp.messages_for(handle.id) == []
        assert h.metric("steadfast_runs_total", phase="Cancelled") == 1
        assert h.metric("steadfast_runs_total", phase="Failed") == 0


async def test_a_deep_run_cancelled_while_its_tools_run_ends_cancelled(
    harness: HarnessFactory,
) -> None:
    """Tool calls run at once and their failures become the model's tool errors: a
    cancel that interrupts them must not pass for such an error and let the loop ask
    the model again."""
    async with harness(deep(20)) as h:
        faults = plan(20)
        faults["search"]["latency_ms"] = 3000
        h.sim.set_faults(faults)
        handle = await h.start(f"cancelled in its tools {uuid.uuid4().hex[:6]}")
        for _ in range(300):
            if h.sim.entries("search"):
                break
            await asyncio.sleep(0.05)
        assert h.sim.entries("search"), "no tool call reached the simulator"
        asked = len(h.sim.entries("llm"))
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.phase == Phase.CANCELLED, status.message
        await asyncio.sleep(0.5)
        assert len(h.sim.entries("llm")) == asked  # the model was not asked again
        assert h.metric("steadfast_runs_total", phase="Cancelled") == 1


async def test_a_pipeline_run_cancelled_while_its_report_is_written_keeps_its_sources(
    harness: HarnessFactory,
) -> None:
    async with harness() as h:
        h.sim.set_faults({"llm": {"chunk_delay_ms": 200, "match": "research report"}})
        handle = await h.start(f"cancelled in its report {uuid.uuid4().hex[:6]}")
        await wait_for_report_call(h.sim, handle.id, settle=0.5)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.phase == Phase.CANCELLED, status.message
        await kept_unmailed(h, handle.id, status, "Sources found")
        assert h.metric("steadfast_runs_total", phase="Cancelled") == 1


async def test_a_deletion_waits_for_a_run_cancelled_mid_call_until_it_has_saved(
    harness: HarnessFactory,
) -> None:
    """An agent's deletion cancels its runs and keeps the agent, and so its workers,
    while a cancelled run has yet to save what it paid for (the operator's
    ``workflows.saving``), asked right after the cancel as the finalizer asks.
    (A run cancelled while it mails is the case the old code let go:
    test_cancel_while_saving.py.)"""
    async with harness() as h:
        h.sim.set_faults({"llm": {"chunk_delay_ms": 200, "match": "research report"}})
        handle = await h.start(f"deleted in its report {uuid.uuid4().hex[:6]}")
        await wait_for_report_call(h.sim, handle.id, settle=0.5)
        run = await handle.describe()
        await handle.cancel()
        assert await operator_workflows.saving(h.client, [run]) == [handle.id]
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        assert await operator_workflows.saving(h.client, [run]) == []
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        await kept_unmailed(h, handle.id, status, "Sources found")

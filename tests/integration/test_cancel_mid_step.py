"""A run cancelled while one of its activities runs ends ``Cancelled``.

The cancel reaches the step it interrupts (an LLM call, a deep turn) as a failed
activity whose cause is a ``CancelledError``. The workflow took that for a failure of
the step: the run ended ``Failed`` with "Activity cancelled", counted among failed
runs and alerted on as one, although a user had asked for it to stop.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import WorkflowFailureError
from tests.integration.conftest import HarnessFactory
from tests.integration.test_deep_agent import deep, plan

from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.mark.parametrize("strategy", ["pipeline", "deep"])
async def test_a_run_cancelled_during_an_llm_call_ends_cancelled(
    harness: HarnessFactory, strategy: str
) -> None:
    overrides = deep(20) if strategy == "deep" else {}
    async with harness(overrides) as h:
        slow = {"latency_ms": 1500}
        h.sim.set_faults(plan(20, **slow) if strategy == "deep" else {"llm": slow})
        handle = await h.start(f"cancelled mid-step {strategy} {uuid.uuid4().hex[:6]}")
        # Deep: in turn 3, findings already recorded; pipeline: generating queries.
        wanted = 3 if strategy == "deep" else 0
        for _ in range(300):
            status = await handle.query(STATUS_QUERY, result_type=RunStatus)
            if status.turn >= wanted and status.phase in (
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
        assert status.message == "cancelled"
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

"""A model that floods one turn with thousands of ``record_finding`` calls cannot wedge
its run.

``record_finding`` runs in the workflow, not as an activity. It used to measure every
finding kept so far for each call, so a turn of thousands of tiny calls, once the
findings neared their byte bound, held the workflow task past the SDK's deadlock
timeout (2 s): every workflow task of the run failed the same way on replay, and the
run could neither end, save its report, nor be cancelled. The model here is a test
activity standing in for ``deep_turn`` (the simulator's agent records at most two
findings a turn); every other activity is the worker's own.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from tests.integration.conftest import HarnessFactory
from tests.integration.test_deep_agent import deep
from tests.support.scripted import scripted_turn, worker_with

from steadfast_contract import activities as act
from steadfast_contract.models import Phase
from steadfast_worker import transcript
from steadfast_worker.deep import MAX_FINDINGS

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

TINY_CALLS = 5000


def flood(turn: int) -> list[act.ToolCall]:
    """Turn 1 fills the findings near their byte bound; turn 2 makes thousands of tiny
    calls (about 25 output tokens each)."""
    if turn == 1:
        url = "https://example.com/" + "u" * 1475
        blocks = [
            {
                "type": "tool_use",
                "id": f"toolu_1_{i:020d}",
                "name": act.TOOL_RECORD_FINDING,
                "input": {"claim": "c" * 500, "source_url": url},
            }
            for i in range(MAX_FINDINGS)
        ]
    else:
        blocks = [
            {
                "type": "tool_use",
                "id": f"toolu_{turn}_{i:020d}",
                "name": act.TOOL_RECORD_FINDING,
                "input": {"claim": "x", "source_url": "y"},
            }
            for i in range(TINY_CALLS)
        ]
    return transcript.tool_calls(blocks)  # the worker's own reading of a reply


@activity.defn(name=act.DEEP_TURN)
async def flooding_turn(inp: act.DeepTurnInput) -> act.DeepTurnOutput:
    return scripted_turn(inp, flood(inp.turn) if inp.turn < inp.max_turns else [])


async def test_a_turn_of_thousands_of_findings_does_not_wedge_the_run(
    harness: HarnessFactory,
) -> None:
    async with harness(deep(3), start_worker=False) as h:
        replaced = {h.activities.deep_turn: flooding_turn}
        async with worker_with(h.client, h.task_queue, h.activities, replaced):
            handle = await h.start(f"findings flood {uuid.uuid4().hex[:6]}")
            result = await asyncio.wait_for(handle.result(), 60)
        assert result.status.phase == Phase.COMPLETED
        assert result.status.findings == MAX_FINDINGS
        assert result.status.report_id
        history = await handle.fetch_history()
        failed = [
            e.workflow_task_failed_event_attributes.failure.message
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        assert failed == []

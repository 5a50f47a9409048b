"""A run's Temporal cost: no mail step without recipients, one patch marker, same memo.

``bench/temporal_cost.py`` measures what a run costs the server; these tests pin
the shape that made it cheaper without giving up a promise: a run whose agent
names no recipients ends with email ``skipped`` and never schedules
``send_email``; a run keeps its spend in the memo with no marker of its own (its
shape is in its input: the one marker is the search step's; one an older starter
started keeps the ``lean-run`` marker); a run
an older worker took to its mail step (it scheduled ``send_email`` for an input
without recipients) still replays on today's code.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer
from tests.integration.conftest import Harness, HarnessFactory
from tests.support.temporal import scheduled_activities

from steadfast_contract import activities as act
from steadfast_contract import starter
from steadfast_contract.models import (
    SEARCH_STEP_PATCH,
    SPEND_MEMO_PATCH,
    WORKFLOW_NAME,
    Phase,
    ResearchResult,
    Spend,
)
from steadfast_contract.starter import research_input
from steadfast_worker.mailing import LEAN_RUN_PATCH
from steadfast_worker.workflows import ResearchWorkflow

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "histories"


async def _history(handle: WorkflowHandle[Any, Any]) -> WorkflowHistory:
    return await handle.fetch_history()


def _patches(history: WorkflowHistory) -> list[dict[str, Any]]:
    return [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and "patch-data" in e.marker_recorded_event_attributes.details
    ]


async def _memo_matches_result(h: Harness, handle: WorkflowHandle[Any, Any]) -> None:
    result: ResearchResult = await handle.result()
    spend = await starter.memo_spend(await handle.describe())
    st = result.status
    assert spend == Spend(st.cost_usd, st.input_tokens, st.output_tokens, st.llm_calls, st.retries)
    assert st.cost_usd > 0


async def test_a_run_without_recipients_schedules_no_mail_and_ends_skipped(
    harness: HarnessFactory,
) -> None:
    async with harness({"notify": {"email": {"to": []}}}) as h:
        handle = await h.start("nobody to mail")
        result = await handle.result()
        assert result.status.phase == Phase.COMPLETED
        assert result.status.email == "skipped"
        assert result.status.report_id
        history = await _history(handle)
        assert act.SEND_EMAIL not in scheduled_activities(history)
        assert act.WRITE_REPORT in scheduled_activities(history)
        assert not h.smtp.messages_for(handle.id)
        assert h.metric("steadfast_runs_total", phase="Completed") == 1
        await _memo_matches_result(h, handle)


async def test_a_run_records_only_the_search_step_marker_and_still_mails_once(
    harness: HarnessFactory,
) -> None:
    async with harness() as h:
        handle = await h.start("no marker")
        result = await handle.result()
        assert result.status.email == "sent"
        history = await _history(handle)
        assert scheduled_activities(history).count(act.SEND_EMAIL) == 1
        assert len(h.smtp.messages_for(handle.id)) == 1
        # Its shape is in its input: no lean-run or spend-memo marker. The one marker
        # (and its TemporalChangeVersion upsert) is the search step's, which keeps a
        # shape-2 run that an older worker searched replayable (test_replay).
        assert [p["id"] for p in _patches(history)] == [SEARCH_STEP_PATCH]
        upserts = [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        ]
        assert len(upserts) == 1
        await _memo_matches_result(h, handle)


async def test_a_run_an_older_starter_started_keeps_the_lean_run_marker(
    harness: HarnessFactory,
) -> None:
    """An input with no shape (a starter, or a Schedule, from before shapes) runs lean
    under the patch marker, as such runs did, and keeps its memo under it."""
    async with harness({"notify": {"email": {"to": []}}}) as h:
        inp = research_input(h.config, "older starter")
        inp = replace(inp, settings=replace(inp.settings, shape=0))
        handle = await h.client.start_workflow(
            WORKFLOW_NAME,
            inp,
            id=h.workflow_id("older starter"),
            task_queue=h.task_queue,
            result_type=ResearchResult,
        )
        result = await handle.result()
        assert result.status.email == "skipped"
        history = await _history(handle)
        assert act.SEND_EMAIL not in scheduled_activities(history)
        assert [p["id"] for p in _patches(history)] == [LEAN_RUN_PATCH]
        assert SPEND_MEMO_PATCH not in json.dumps(_patches(history))
        await _memo_matches_result(h, handle)


async def test_an_older_workers_mail_step_replays_for_an_input_without_recipients() -> None:
    # A run recorded by a worker from before the lean shape: with an input that names
    # no recipients (a newer starter's), it scheduled send_email all the same.
    history = WorkflowHistory.from_json(
        "older", (FIXTURES / "happy_path_with_email_spend_memo.json").read_text()
    )
    started = history.events[0].workflow_execution_started_event_attributes
    payload = started.input.payloads[0]
    inp = json.loads(payload.data)
    inp["settings"]["mail_recipients"] = False
    payload.data = json.dumps(inp).encode()
    assert act.SEND_EMAIL in scheduled_activities(history)
    result = await Replayer(workflows=[ResearchWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, result.replay_failure

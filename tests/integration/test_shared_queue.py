"""Two agents on one task queue: a worker never serves the other agent's run.

A worker runs activities with its own agent's model key, store and recipients.
When two agents' workers poll one queue (both name the same custom
``spec.temporal.taskQueue``, in namespaces the operator does not both watch, or
on two installations sharing a Temporal namespace), each would take the other's
activities: one team's key paying for the other's run and its report saved in
the other's database. Here agent ``other``'s worker is the only one polling when
agent ``itest`` starts a run: it must refuse every activity of that run
(:mod:`steadfast_worker.ownership`), send no model request and save nothing, and
the run goes on when ``itest``'s own worker comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowHandle
from tests.integration.conftest import Harness, HarnessFactory, base_config, merge_config
from tests.support.temporal import failure_of

from steadfast_contract import errortypes
from steadfast_contract.config import parse_config
from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_worker.activities import ResearchActivities
from steadfast_worker.activities.storage import open_store
from steadfast_worker.metrics import Metrics
from steadfast_worker.worker import build_worker

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

#: The run's model retries slowly enough to swap workers between two attempts.
SLOW_LLM_RETRIES = {
    "retryPolicies": {
        "llm": {"initialInterval": "1s", "backoffCoefficient": 1.0, "maximumAttempts": 30}
    }
}


@contextlib.asynccontextmanager
async def other_agents_worker(h: Harness, sqlite_path: Path) -> AsyncIterator[None]:
    """A worker of agent ``other``, with its own store, on ``h``'s task queue."""
    raw = merge_config(
        base_config(h.sim, h.task_queue, sqlite_path), {"agent": "other", "namespace": "team-b"}
    )
    config = parse_config(raw)
    activities = ResearchActivities(config, Metrics(), h.env)
    try:
        async with build_worker(h.client, config, activities):
            yield
    finally:
        await activities.aclose()


async def refused_attempts(handle: WorkflowHandle[Any, Any]) -> int:
    """The attempt number of the run's pending activity, once an attempt of it has
    failed as another agent's task (0 before)."""
    desc = await handle.describe()
    for pending in desc.raw_description.pending_activities:
        failure = pending.last_failure.application_failure_info
        if failure.type == errortypes.OTHER_AGENTS_TASK and pending.state in (
            PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED,
            PendingActivityState.PENDING_ACTIVITY_STATE_STARTED,
        ):
            return pending.attempt
    return 0


async def reports_in(sqlite_path: Path, workflow_id: str) -> int:
    store = await open_store("", str(sqlite_path))
    try:
        return len(await store.list_reports(workflow_id))
    finally:
        await store.close()


def llm_requests_of(h: Harness, workflow_id: str) -> int:
    return sum(1 for e in h.sim.entries("llm") if str(e.get("key", "")).startswith(workflow_id))


async def test_another_agents_worker_refuses_the_run_and_its_own_finishes_it(
    harness: HarnessFactory, tmp_path: Path
) -> None:
    other_db = tmp_path / "other.db"
    async with harness(SLOW_LLM_RETRIES, start_worker=False) as h:
        topic = f"shared queue {uuid.uuid4().hex[:6]}"
        async with other_agents_worker(h, other_db):
            handle = await h.start(topic)
            for _ in range(200):
                if await refused_attempts(handle) >= 2:
                    break
                await asyncio.sleep(0.1)
            else:
                desc = await handle.describe()
                pytest.fail(f"agent other's worker did not refuse the run: {desc.status}")
        # Nothing of the run reached the model or the other agent's store.
        assert llm_requests_of(h, handle.id) == 0
        assert await reports_in(other_db, handle.id) == 0

        async with h.worker():
            result = await handle.result()
        assert result.status.phase == Phase.COMPLETED
        assert result.status.report_id
        assert await reports_in(Path(h.config.storage.sqlite_path), handle.id) == 1
        assert await reports_in(other_db, handle.id) == 0
        assert llm_requests_of(h, handle.id) == result.status.llm_calls


async def test_a_run_only_another_agent_polls_for_fails_naming_the_shared_queue(
    harness: HarnessFactory, tmp_path: Path
) -> None:
    other_db = tmp_path / "other.db"
    few = {"retryPolicies": {"llm": {"maximumAttempts": 2}}}
    async with harness(few, start_worker=False) as h:
        async with other_agents_worker(h, other_db):
            handle = await h.start(f"shared queue {uuid.uuid4().hex[:6]}")
            cause = await failure_of(handle)
            status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert cause.type == errortypes.OTHER_AGENTS_TASK, cause
        assert f"task queue {h.task_queue!r} is shared" in cause.message
        assert "itest-ns/itest" in cause.message
        assert "team-b/other" in cause.message
        assert status.phase == Phase.FAILED
        assert status.cost_usd == 0.0
        assert llm_requests_of(h, handle.id) == 0
        assert await reports_in(other_db, handle.id) == 0
        assert h.smtp.messages_for(handle.id) == []

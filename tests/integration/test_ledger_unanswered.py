"""A cancelled activity stops asking a day's ledger that no worker answers.

A ledger runs on its agent's task queue, so while the agent's last worker drains
(SIGTERM: it no longer polls workflow tasks) or after its run is gone, a
reservation may wait for a workflow task nobody takes. The SDK reports an update
RPC that was cancelled as it reports one that timed out, and the ledger's retry
loop took both for "busy": a cancelled activity went on asking, and a draining
worker (or a test's) could not stop until the retries' patience ran out, many
minutes later. Here the ledger's queue has no worker at all, and the activity is
cancelled a second after it asked.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from temporalio.testing import ActivityEnvironment
from tests.integration.conftest import HarnessFactory

from steadfast_contract import activities as act
from steadfast_contract import budget
from steadfast_worker.activities import daybudget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_a_cancelled_reservation_ends_although_no_worker_runs_the_ledger(
    harness: HarnessFactory,
) -> None:
    async with harness(start_worker=False) as h:
        nobody = f"nobody-polls-{uuid.uuid4().hex[:8]}"
        run = act.RunBudget(0.0, 1.0, 50.0, budget.ledger_key("itest-ns", "unanswered", nobody))
        env = ActivityEnvironment(h.client)
        env.info = replace(
            env.info,
            workflow_id=f"unanswered-{uuid.uuid4().hex[:8]}",
            workflow_run_id="run-1",
            activity_id="1",
            heartbeat_timeout=timedelta(seconds=3),
            task_queue=nobody,
        )

        async def reserve() -> str | None:
            return await daybudget.reserve_day(run, daybudget.request_key(), 0.01, {})

        asking = asyncio.create_task(env.run(reserve))
        await asyncio.sleep(1.0)
        assert not asking.done()  # the update waits for a worker that is not there
        env.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asking, 15)
        # It ended at the cancel, not after the server's 20 s update deadline and
        # the retries after it.
        assert time.monotonic() - cancelled_at < 5

"""Reading a failed update-with-start's start operation never swallows a cancel.

After the ledger answers busy, a reserve reads the failure the SDK also left in
the start operation (or asyncio logs it as never retrieved). A cancel of the
activity that lands during that read must still cancel it: swallowed, the
reserve would go on asking the ledger, for up to a minute, on behalf of an
activity whose worker is draining or whose run is gone.
"""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from tests.support.abandoned import no_abandoned_async_work  # noqa: F401  (autouse)

from steadfast_worker.activities.daybudget import _take_start_outcome

pytestmark = pytest.mark.unit


def _operation() -> WithStartWorkflowOperation[object, object]:
    """A start operation never sent: its handle is not set until the 1 s bound."""
    return WithStartWorkflowOperation(
        "ledger",
        id="steadfast-budget/ns/agent@queue/2026-12-02",
        task_queue="queue",
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def test_a_cancel_during_the_read_cancels_the_reader() -> None:
    reading = asyncio.ensure_future(_take_start_outcome(_operation()))
    await asyncio.sleep(0.05)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert reading.cancelled()


async def test_an_operation_that_never_answers_is_given_up_after_its_bound() -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await _take_start_outcome(_operation())
    assert 0.9 <= loop.time() - t0 < 3.0

"""The run's budget as an LLM activity checks a request against it.

An activity gets the run's budget in its input (:class:`RunBudget`), which Temporal
records once, when the workflow schedules it: every retry and re-ask gets the same
copy. A ``budget`` update that lowers ``maxUSDPerRun`` or ``maxUSDPerDay`` while the
activity retries (stream cuts, overloaded answers) changed only the workflow's own
check, so the retries went on spending up to the old limit. So every request after
the activity's first asks the run for its limits as they are now (the ``status``
query: one RPC, on the retry path only); the first request's copy is a few
milliseconds old. Should the run not answer within :data:`ASK_SECONDS`, the copy it
was scheduled with decides.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Final

from temporalio import activity

from steadfast_contract.activities import RunBudget
from steadfast_contract.models import STATUS_QUERY, RunStatus
from steadfast_worker.activities.heartbeat import Carried

#: How long a request waits for the run to say its limits.
ASK_SECONDS: Final = 5.0


def budget_now(scheduled: RunBudget, status: RunStatus) -> RunBudget:
    """``scheduled``, with the limits the run has now, and what it has spent since
    (other activities' spend; this activity's own is carried apart). A limit the
    status does not state (0) stays as scheduled."""
    day = scheduled.day_limit_usd
    if day > 0 and scheduled.ledger and status.max_usd_per_day > 0:
        day = status.max_usd_per_day
    run = status.max_usd_per_run if status.max_usd_per_run > 0 else scheduled.limit_usd
    return replace(
        scheduled,
        spent_usd=max(scheduled.spent_usd, status.cost_usd),
        limit_usd=run,
        day_limit_usd=day,
    )


async def current(scheduled: RunBudget | None, carried: Carried, ask: int) -> RunBudget | None:
    """The budget request ``ask`` of this attempt is checked against.

    Not asked after an attempt lost with its worker: the run's queries would wait on
    that worker's sticky queue first, adding seconds to every resume, and a lost
    attempt is no loop of retries that a lowered limit must stop.
    """
    info = activity.info()
    first = info.attempt == 1 and ask == 0
    if scheduled is None or first or carried.was_lost(info.attempt) or not info.workflow_id:
        return scheduled
    try:
        handle = activity.client().get_workflow_handle(
            info.workflow_id, run_id=info.workflow_run_id
        )
        status = await asyncio.wait_for(
            handle.query(STATUS_QUERY, result_type=RunStatus), ASK_SECONDS
        )
    except Exception as err:  # an unanswered query must not stop the request
        activity.logger.warning(
            "could not read the run's budget now (%s): checking against it as scheduled",
            type(err).__name__,
        )
        return scheduled
    return budget_now(scheduled, status)

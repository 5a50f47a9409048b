"""The LLM activities' side of the day's budget: reserve before a request, settle after.

The daily budget is granted by the agent's ledger workflow for the day
(:mod:`steadfast_worker.ledger`); an activity reaches it with update-with-start
through its own worker's client, so the first request of the day creates it and
every later one finds it. A request the day cannot pay for is refused with the
non-retryable ``BudgetExhausted`` saying ``budget: day``, and the run pauses
before it as it does for its own budget. Settling is a signal, which the server
keeps at once (no workflow task needed, so a worker draining on SIGTERM still
finishes its call), and bookkeeping: if it fails the reservation stays, which
overstates the day's spend and never understates it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from steadfast_contract import budget
from steadfast_contract.activities import RunBudget
from steadfast_contract.ledger import (
    CHARGE_LOST_UPDATE,
    LEDGER_WORKFLOW,
    RESERVE_UPDATE,
    SETTLE_SIGNAL,
    ChargeLostInput,
    ChargeLostResult,
    LedgerInput,
    ReserveInput,
    ReserveResult,
    SettleInput,
)
from steadfast_contract.models import WORKFLOW_TASK_TIMEOUT
from steadfast_worker import errors
from steadfast_worker.activities import stickiness

log = logging.getLogger(__name__)
T = TypeVar("T")


#: Ledger updates one worker process has in flight at once: Temporal admits only a
#: few in-flight updates per workflow (``history.maxInFlightUpdates``, 10 by default).
GATE_SIZE = 4
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)
#: How long a ledger call keeps trying while Temporal says the ledger is busy (or
#: holds an update no worker has taken for its whole RPC deadline), by the clock.
PATIENCE_SECONDS = 60.0
#: What the server answers while the ledger cannot take a request now but will soon:
#: too many updates at once, or the ledger continuing as new ("workflow is closing";
#: an update aborted with ``WorkflowNotReady`` because the workflow task that would
#: have taken it was failed to let newer events in, ``FAILED_PRECONDITION``). The next
#: try reaches the running ledger, or the one it continued as.
_BUSY = (
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.ABORTED,
    RPCStatusCode.FAILED_PRECONDITION,
)


async def _patiently(call: Callable[[], Awaitable[T]], *, gated: bool = True) -> T:
    """``call`` (an update: through this process's gate), again while the ledger is
    busy (many runs asking at once), with jittered backoff, for at most
    :data:`PATIENCE_SECONDS`; the activity heartbeats meanwhile.

    The SDK reports an update whose RPC was cancelled as it reports one that timed
    out: a cancelled activity (its worker draining, its run gone) stops here, and
    does not ask again for a ledger that may have no worker left to answer."""
    loop = asyncio.get_running_loop()
    delay, until = 0.05, loop.time() + PATIENCE_SECONDS
    while True:
        try:
            if not gated:
                return await call()
            async with _gates.setdefault(loop, asyncio.Semaphore(GATE_SIZE)):
                return await call()
        except WorkflowUpdateRPCTimeoutOrCancelledError as err:
            if isinstance(err.__cause__, asyncio.CancelledError):
                raise asyncio.CancelledError() from err
            if loop.time() >= until:
                raise
        except RPCError as err:
            if err.status not in _BUSY or loop.time() >= until:
                raise
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 2.0)


async def _take_start_outcome(start: WithStartWorkflowOperation[Any, Any]) -> None:
    """Read what a failed update-with-start left in its start operation, and drop it.

    The SDK hands the call's failure to the start operation's handle as well as
    raising it; left unread, asyncio logs it as "Future exception was never
    retrieved", an ERROR with a traceback, on every busy answer (a ledger
    continuing as new gives several). The SDK has set it by the time the call
    raises; the wait only bounds a path where it has not. A cancel of this task
    that arrives meanwhile goes on (the activity is being cancelled: its worker
    drains, or its run is gone); one the start operation carries is only read."""
    try:
        await asyncio.wait_for(start.workflow_handle(), timeout=1.0)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception:  # the failure the call raised, read here so nobody reports it
        pass


def request_key(ask: int | str = 0) -> str:
    """This request's key in the ledger: run, activity, attempt and ask."""
    return f"{attempt_prefix(activity.info().attempt)}{ask}"


def attempt_prefix(attempt: int) -> str:
    """What the keys of every request of ``attempt`` of this activity start with."""
    return f"{activity_prefix()}{attempt}/"


def activity_prefix() -> str:
    """What the keys of every request of every attempt of this activity start with (an
    activity scheduled again for the same step has another id)."""
    info = activity.info()
    return f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}/"


async def reserve_day(
    run: RunBudget | None, request: str, reserve_usd: float, details: dict[str, object]
) -> str | None:
    """Reserve ``reserve_usd`` from today's ledger; the ledger's id to settle with.

    ``None`` when the run has no daily budget. A refusal raises ``BudgetExhausted``
    carrying ``details`` (what this activity spent so far) and the day's numbers.
    """
    if run is None or run.day_limit_usd <= 0 or not run.ledger:
        return None
    now = datetime.now(UTC)
    day = budget.day_of(now)
    ledger_id = budget.ledger_id(run.ledger, day)
    closes = budget.seconds_to_next_day(now) + budget.LEDGER_GRACE.total_seconds()

    async def ask() -> ReserveResult:
        # A new operation for every try: the SDK refuses to send one twice.
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            LEDGER_WORKFLOW,
            LedgerInput(run.ledger, day),
            id=ledger_id,
            task_queue=activity.info().task_queue,
            task_timeout=WORKFLOW_TASK_TIMEOUT,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A closed ledger is a day that is over: never start it again from zero.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            # The day's end (and the grace for late settles) closes it, server-side.
            execution_timeout=timedelta(seconds=closes),
        )
        try:
            answer: ReserveResult = await activity.client().execute_update_with_start_workflow(
                RESERVE_UPDATE,
                ReserveInput(request, reserve_usd, run.day_limit_usd),
                start_workflow_operation=start,
                result_type=ReserveResult,
            )
        except BaseException:
            await _take_start_outcome(start)
            raise
        return answer

    await stickiness.unstick_once(ledger_id)  # it may be waiting on a lost worker too
    answer = await _patiently(ask)
    if answer.granted:
        return ledger_id
    decision = budget.BudgetDecision(
        False, answer.spent_usd, answer.reserve_usd, answer.limit_usd, budget.DAY, day
    )
    raise ApplicationError(
        f"daily budget reached: {decision.message}",
        {**details, **decision.as_details()},
        type=errors.BUDGET_EXHAUSTED,
        non_retryable=True,
    )


async def settle_day(
    ledger_id: str | None, request: str, cost_usd: float, *, held_only: bool = False
) -> None:
    """Replace the request's reservation with what it cost (a failure only logs). A
    request the ledger settled lower is raised to ``cost_usd``; with ``held_only``, a
    request the ledger does not hold is left alone (:class:`SettleInput`)."""
    if ledger_id is None:
        return
    await stickiness.unstick_once(ledger_id)  # it may be waiting on a lost worker too

    async def tell() -> None:
        await (
            activity.client()
            .get_workflow_handle(ledger_id)
            .signal(SETTLE_SIGNAL, SettleInput(request, cost_usd, held_only))
        )

    try:
        await _patiently(tell, gated=False)
    except Exception as err:  # bookkeeping: the reservation stands instead
        log.warning("could not settle %s in %s: %s", request, ledger_id, type(err).__name__)


def lost_ledgers(run: RunBudget | None, named: str = "") -> list[str]:
    """The ledgers that may hold requests of this activity's lost attempts: those of
    the UTC days since it was first scheduled (:func:`steadfast_contract.budget.days_spanned`:
    its attempts may have reserved before midnight), and ``named``, the one its last
    heartbeat named. Empty without a daily budget."""
    ids = [named] if named else []
    if run is not None and run.day_limit_usd > 0 and run.ledger:
        days = budget.days_spanned(activity.info().scheduled_time, datetime.now(UTC))
        ids += [budget.ledger_id(run.ledger, day) for day in days]
    return list(dict.fromkeys(ids))


async def charge_lost(
    ledger_id: str, prefixes: list[str], named: dict[str, float]
) -> ChargeLostResult | None:
    """Settle what the lost attempts of this activity (their keys start with one of
    ``prefixes``, from :func:`attempt_prefix`) reserved in ``ledger_id`` and
    nobody settled: the ``named`` requests at what their heartbeat said, the rest at
    their reservation (:meth:`steadfast_contract.budget.DayBook.charge_lost`). A
    request whose heartbeat never reached Temporal (the SDK holds one for most of
    the heartbeat timeout after the last) may have been sent and billed.

    ``None`` when the ledger did not answer (the reservations stay held, which
    overstates the day and never understates it); nothing charged when there is
    no ledger today (nothing was reserved in it).
    """
    request = ChargeLostInput(prefixes, named)

    async def ask() -> ChargeLostResult:
        handle = activity.client().get_workflow_handle(ledger_id)
        answer: ChargeLostResult = await handle.execute_update(
            CHARGE_LOST_UPDATE, request, result_type=ChargeLostResult
        )
        return answer

    await stickiness.unstick_once(ledger_id)
    try:
        answer = await _patiently(ask)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return ChargeLostResult()
        log.warning("could not charge lost requests in %s: %s", ledger_id, err.status)
        return None
    except Exception as err:
        log.warning("could not charge lost requests in %s: %s", ledger_id, type(err).__name__)
        return None
    if answer.requests:
        log.warning(
            "charged %d request(s) of lost attempts: $%.6f ($%.6f of it named by heartbeats)",
            answer.requests,
            answer.charged_usd,
            answer.named_usd,
        )
    return answer

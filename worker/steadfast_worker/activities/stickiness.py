"""After a worker dies, tell the server so: its workflows' next tasks go to live workers.

A worker keeps the workflows it ran in its cache and the server sends their next
workflow tasks to that worker's own ("sticky") queue. When the worker is SIGKILLed,
the server only learns it is gone when such a task has waited
``sticky_queue_schedule_to_start_timeout`` there; every workflow the dead worker
was running loses that much time at the next step of its run.

The attempt that replaces one lost with its worker knows that worker is dead, so
it clears the stickiness of the workflows that are waiting on it: its own run
(whose next task follows this attempt's result) and the day's ledger (which this
attempt is about to tell what the lost request cost, or ask for a reservation),
before its first word to it. It costs one RPC per workflow, only on such a retry;
clearing the stickiness of a workflow whose worker is alive costs that worker one
replay of the workflow, nothing else.
"""

from __future__ import annotations

import contextvars
import logging

from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import ResetStickyTaskQueueRequest
from temporalio.service import RPCError

log = logging.getLogger(__name__)

_after_lost_worker: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "steadfast_after_lost_worker", default=False
)
_unstuck: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "steadfast_unstuck", default=frozenset()
)


def after_lost_worker() -> bool:
    """Whether the current attempt replaces one that vanished with its worker."""
    return _after_lost_worker.get()


async def replacing_lost_attempt() -> None:
    """Note that this attempt replaces a lost one, and unstick its own run."""
    _after_lost_worker.set(True)
    info = activity.info()
    if info.workflow_id:  # an activity of a workflow, not a standalone one
        await unstick(info.workflow_id, info.workflow_run_id or "")


async def unstick_once(workflow_id: str) -> None:
    """In an attempt that replaces a lost one: clear ``workflow_id``'s sticky queue
    before the attempt first signals or updates it (once; nothing otherwise)."""
    done = _unstuck.get()
    if not after_lost_worker() or workflow_id in done:
        return
    _unstuck.set(done | {workflow_id})
    await unstick(workflow_id)


async def unstick(workflow_id: str, run_id: str = "") -> None:
    """Clear ``workflow_id``'s sticky queue (``run_id`` empty: its current run).

    Best effort: if it fails, the workflow's next task still reaches a live
    worker, after the sticky queue's time-out.
    """
    try:
        client = activity.client()
    except RuntimeError:  # an activity run without a worker's client (a unit test's)
        return
    request = ResetStickyTaskQueueRequest(
        namespace=client.namespace,
        execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
    )
    try:
        await client.workflow_service.reset_sticky_task_queue(request)
    except RPCError as err:
        log.info("could not clear the sticky queue of %s: %s", workflow_id, err.message)

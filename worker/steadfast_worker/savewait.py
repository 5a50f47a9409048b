"""The save of a paid report waits out a report-store outage instead of failing the run.

By the time a run reaches ``Saving`` its LLM calls are paid for. The database
retry policy the user sets (``retryPolicies.database``, about 37 s by default)
governs the first try; when it gives up on an error worth retrying (the store is
down, restarting or refusing connections), the run stays in ``Saving`` with the
message ``waiting for the report store: <error class>`` and keeps trying: rounds
of attempts on a bounded exponential backoff (1 s doubling, at most
:data:`MAX_INTERVAL` between attempts, no attempt limit), until the store
answers or ``storage.saveTimeout`` has passed. The markdown is the save
activity's input, already in history: no LLM call is repeated.

Temporal retries an activity inside a round without adding history events, so
a week-long outage costs a few events per :data:`ROUND` rather than per
attempt; the status message is refreshed at each round's end.

A cancel of the run does not stop the save either: the cancelled attempt is
tried again at once (the markdown is paid for), and the result says a cancel
came (:attr:`Saved.cancelled`), so the run ends ``Cancelled`` after the save
instead of mailing (:data:`~steadfast_contract.models.CANCEL_HOLDS_MAIL_PATCH`;
runs recorded before it took the cancel for an outage and went on to mail).

Deterministic code for the workflow (imported through the sandbox's
pass-through): ``workflow`` APIs and the contract only. Runs recorded before
this existed replay as they ran (:data:`SAVE_WAIT_PATCH`): their first failure
failed them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

import steadfast_worker.failures as failures
from steadfast_contract import activities as act
from steadfast_contract.errortypes import NON_RETRYABLE_TYPES
from steadfast_contract.models import CANCEL_HOLDS_MAIL_PATCH, RunSettings, RunStatus
from steadfast_contract.retry import to_retry_policy

SAVE_WAIT_PATCH = "save-waits-for-store"
"""The ``workflow.patched`` id guarding the wait: older runs replay without it."""
MAX_INTERVAL = timedelta(seconds=30)
"""Longest pause between two attempts while the store is down."""
ROUND = timedelta(minutes=20)
"""Attempts Temporal retries on its own before the workflow refreshes the message."""
WAITING = "waiting for the report store: "
"""How the status message of a run waiting for its store starts."""
STORE_ERROR = "storeError"
"""The failure detail in which ``save_report`` names the store's error class."""


@dataclass(frozen=True)
class Saved:
    """A saved report, and whether the run was cancelled while saving it."""

    output: act.SaveReportOutput
    cancelled: bool = False


def cancel_of_run(err: BaseException) -> bool:
    """Whether a save ended by the run's cancel: the workflow asks Temporal to cancel
    the activity it awaits, which then fails with a ``CancelledError`` cause; a save
    that completed in the same activation as the cancel raises the cancel itself
    (its result is dropped, but the save is an upsert: the next attempt answers with
    the same report id)."""
    if isinstance(err, asyncio.CancelledError):
        return True
    return isinstance(err, ActivityError) and failures.cancelled(err)


def outage_policy() -> RetryPolicy:
    """Bounded exponential backoff, no attempt limit: a round ends by its timeout."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=MAX_INTERVAL,
        maximum_attempts=0,
        non_retryable_error_types=list(NON_RETRYABLE_TYPES),
    )


def error_class(err: ActivityError, previous: str = "") -> str:
    """The store's error class a failed save names (never its message: it may hold
    the DSN's host or user). A round that ran out of time names none: ``previous``."""
    cause = err.cause
    if isinstance(cause, TimeoutError) and isinstance(cause.cause, ApplicationError):
        cause = cause.cause  # the last attempt's failure, under the round's timeout
    if isinstance(cause, ApplicationError):
        first = cause.details[0] if cause.details else None
        if isinstance(first, dict) and first.get(STORE_ERROR):
            return str(first[STORE_ERROR])
        return cause.type or previous or "Unexpected"
    return previous or "Timeout"


def telling(latest: ActivityError, before: ActivityError) -> ActivityError:
    """The failure the run ends with should the wait run out: ``latest``, unless it is
    a round that timed out before any attempt failed (a short last round), which says
    nothing of the store; then ``before``, which does."""
    cause = latest.cause
    if isinstance(cause, TimeoutError) and not isinstance(cause.cause, ApplicationError):
        return before
    return latest


def worth_waiting(err: ActivityError) -> bool:
    """Whether a failed save may succeed later: anything but a non-retryable error."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return not cause.non_retryable and (cause.type or "") not in NON_RETRYABLE_TYPES
    return True


async def save_report(
    request: act.SaveReportInput,
    settings: RunSettings,
    status: RunStatus,
    *,
    start_to_close: timedelta,
) -> Saved:
    """Save the report, waiting for the store up to ``settings.save_timeout_seconds``.

    ``status.message`` says what the run waits for while the store is down, and
    is given back its earlier text once the store answered. The output's
    ``attempt`` counts each failed round as one attempt more; a cancel of the run
    is not a failure: the save is tried again, and the result says it came.
    """
    heartbeat = timedelta(seconds=settings.heartbeat_timeout_seconds)

    async def once(retry: RetryPolicy, schedule_to_close: timedelta | None) -> act.SaveReportOutput:
        out: act.SaveReportOutput = await workflow.execute_activity(
            act.SAVE_REPORT,
            request,
            result_type=act.SaveReportOutput,
            start_to_close_timeout=start_to_close,
            schedule_to_close_timeout=schedule_to_close,
            heartbeat_timeout=heartbeat,
            retry_policy=retry,
        )
        return out

    cancelled = False

    def first_cancel(err: BaseException) -> bool:
        """Whether ``err`` is the run's cancel, not seen before: the save goes on."""
        nonlocal cancelled
        if cancelled or not cancel_of_run(err) or not workflow.patched(CANCEL_HOLDS_MAIL_PATCH):
            return False
        cancelled = True
        return True

    while True:
        try:
            first = await once(to_retry_policy(settings.retry_policies.database), None)
            return Saved(first, cancelled)
        except asyncio.CancelledError as err:
            if first_cancel(err):
                continue
            raise
        except ActivityError as err:
            if first_cancel(err):
                continue
            if not worth_waiting(err) or not workflow.patched(SAVE_WAIT_PATCH):
                raise
            failed = err
            break
    deadline = workflow.now() + timedelta(seconds=settings.save_timeout_seconds)
    rounds, before = 1, status.message
    cls = error_class(failed)
    while True:
        status.message = WAITING + cls
        left = deadline - workflow.now()
        if left <= timedelta(0):
            raise failed
        try:
            saved = await once(outage_policy(), min(ROUND, left))
        except asyncio.CancelledError as err:
            if first_cancel(err):
                continue
            raise
        except ActivityError as err:
            if first_cancel(err):
                continue
            if not worth_waiting(err):
                raise
            failed, rounds, cls = telling(err, failed), rounds + 1, error_class(err, cls)
            continue
        status.message = before
        out = act.SaveReportOutput(
            saved.report_id, saved.created, saved.backend, saved.attempt + rounds
        )
        return Saved(out, cancelled)

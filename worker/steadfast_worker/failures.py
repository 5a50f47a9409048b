"""What a failed activity tells the workflow: the details it carried, and how to report it.

Pure functions of a Temporal ``ActivityError``, used by the deterministic workflow
code (imported through the sandbox's pass-through), so they import nothing but
Temporal's exception types and the contract's error type names.
"""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError

from steadfast_contract import errortypes
from steadfast_contract.budget import DAY, BudgetDecision


class BudgetStopError(Exception):
    """The workflow's own check refused the next LLM activity (ends the run
    BudgetExhausted). ``gathered``: the unfinished report of what the run had gathered
    by then, set on the way out by the strategy that knows it ("" for nothing)."""

    def __init__(self, decision: BudgetDecision) -> None:
        super().__init__(decision.message)
        self.decision = decision
        self.gathered = ""

    @property
    def which(self) -> str:
        """The budget that stopped the run, as its unfinished report says it."""
        return "the day's budget" if self.decision.scope == DAY else "the run's budget"


class StepFailedError(Exception):
    """The step that writes the report failed for good after the run had gathered
    something: the run ends ``Failed`` as it would have, keeping ``gathered``, the
    unfinished report of what it had paid to gather ("" for nothing)."""

    def __init__(self, cause: ActivityError, gathered: str) -> None:
        super().__init__(cause.message)
        self.cause = cause
        self.gathered = gathered


class RefusedError(StepFailedError):
    """The model refused a step (``ModelRefused``): the run ends ``Failed``, keeping
    ``gathered``, the unfinished report of what it had gathered ("" for nothing)."""


class CancelledKeepingError(Exception):
    """The run was cancelled before its report, after it had paid to gather something:
    it ends ``Cancelled``, keeping ``gathered``, the unfinished report of it. ``cause``
    is how the cancel reached the run: the activity it interrupted, or the
    ``asyncio.CancelledError`` of a wait."""

    def __init__(self, cause: BaseException, gathered: str) -> None:
        super().__init__("cancelled")
        self.cause = cause
        self.gathered = gathered


class Accounted:
    """The failures a run has counted the spend of, so none is counted twice.

    It holds the errors themselves. A set of their ``id()`` values would not do: an error
    counted and then dropped (a budget refusal whose step runs again, a deep turn's
    failed tool) frees its address, the next error is often made there, and it would
    pass for counted. Its spend would be left out of the run's figures, and a replay,
    whose allocator need not reuse the same addresses, could issue other commands."""

    def __init__(self) -> None:
        self._held: dict[int, BaseException] = {}

    def add(self, err: BaseException) -> None:
        self._held[id(err)] = err

    def __contains__(self, err: object) -> bool:
        return self._held.get(id(err)) is err


def cancelled(err: ActivityError) -> bool:
    """Whether the activity ended because the run was cancelled while it ran."""
    return isinstance(err.cause, CancelledError)


def refused(err: ActivityError) -> bool:
    """Whether the activity ended because the model refused its request."""
    cause = err.cause
    return isinstance(cause, ApplicationError) and cause.type == errortypes.MODEL_REFUSED


def failure_details(err: ActivityError) -> dict[str, Any]:
    """The first detail of an activity's ApplicationError, when it is a mapping.

    Activities attach what a failed attempt cost (``failed_cost_usd``, ``calls``,
    ``attempt``) this way, so the run counts spend that never produced a result.
    """
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details:
        first = cause.details[0]
        if isinstance(first, dict):
            return first
    return {}


def budget_refusal(err: ActivityError) -> BudgetDecision | None:
    """The refusal an LLM activity raised before a request that did not fit, if it did."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type == errortypes.BUDGET_EXHAUSTED:
        return BudgetDecision.refused(failure_details(err))
    return None


def describe(err: ActivityError) -> tuple[str, str]:
    """The error type and message a failed run reports, from its activity's failure."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.type or errortypes.UNEXPECTED, f"{err.activity_type}: {cause.message}"
    if isinstance(cause, TimeoutError):
        # A schedule-to-close timeout carries the last attempt's failure: say why the
        # attempts failed, not only that time ran out (a save that waited for its store).
        last = cause.cause
        why = f"; last attempt: {last.message}" if isinstance(last, ApplicationError) else ""
        return errortypes.TIMEOUT, f"{err.activity_type}: timed out ({cause.type}){why}"
    return errortypes.UNEXPECTED, f"{err.activity_type}: {err.message}"

"""The run's side of its budgets: check before each LLM step, pause when it does not fit.

docs/design.md §3: a run that cannot afford its next LLM call pauses before it, in
phase ``AwaitingBudget``, and waits up to ``budget.pauseTimeout`` for more: a
``budget`` update (``steadfast budget``, or the operator passing on an edit of
``maxUSDPerRun``/``maxUSDPerDay``) or, when the day's budget stopped it, the next
UTC day. Then the step runs as if nothing happened (what the run already paid for
is kept, never asked again); if the wait runs out the run ends ``BudgetExhausted``.

Two places can refuse a call: the workflow's own check before an LLM activity
(:meth:`BudgetGate.afford`) and the activity's check before each request it sends,
which also asks the day's ledger (a non-retryable ``BudgetExhausted`` failure);
:meth:`BudgetGate.step` turns either into a pause (:meth:`BudgetGate.refused`, which the
pipeline's searches through the model use too: each is a paid request). Deterministic workflow code;
the decisions are the pure functions of :mod:`steadfast_contract.budget`. Runs
recorded before the pause existed replay as they ran (``BUDGET_PAUSE_PATCH``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from steadfast_contract import activities as act
    from steadfast_contract import budget, pricing
    from steadfast_contract.models import (
        BUDGET_PAUSE_PATCH,
        SEARCH_RESULTS_RESERVED_PATCH,
        SPEND_MEMO,
        SPEND_MEMO_PATCH,
        Phase,
        Pricing,
        ResearchInput,
        RunStatus,
        SetBudgetInput,
        SetBudgetResult,
        Spend,
    )
    from steadfast_worker import failures, mailing

T = TypeVar("T")


class BudgetGate:
    """The limits a run holds now, and the pause before a call they do not cover."""

    def __init__(
        self,
        inp: ResearchInput,
        status: RunStatus,
        publish: Callable[[], None],
        account: Callable[[ActivityError], None],
    ) -> None:
        self._inp = inp
        self._status = status
        self._publish = publish
        self._account = account
        self.max_run = inp.settings.max_usd_per_run
        self.max_day = inp.settings.max_usd_per_day
        self._changes = 0
        status.max_usd_per_run, status.max_usd_per_day = self.max_run, self.max_day

    # -- the ``budget`` update ------------------------------------------------------

    def refusal(self, change: SetBudgetInput) -> str:
        phase = self._status.phase
        return budget.raise_refusal(
            self._status.cost_usd,
            change.max_usd_per_run,
            change.max_usd_per_day,
            closed=phase.value if phase.terminal else "",
        )

    def apply(self, change: SetBudgetInput) -> SetBudgetResult:
        if change.max_usd_per_run is not None:
            self.max_run = change.max_usd_per_run
        if change.max_usd_per_day is not None:
            self.max_day = change.max_usd_per_day if self.max_day > 0 else 0.0
        self._changes += 1
        st = self._status
        st.max_usd_per_run, st.max_usd_per_day = self.max_run, self.max_day
        paused = " (the run resumes)" if st.phase == Phase.AWAITING_BUDGET else ""
        return SetBudgetResult(
            True,
            f"run budget ${self.max_run:.4f}, spent ${st.cost_usd:.4f}{paused}",
            st.cost_usd,
            self.max_run,
            self.max_day,
        )

    # -- checks -----------------------------------------------------------------------

    def run_budget(self) -> act.RunBudget:
        """What an LLM activity checks each request against (and the day's ledger to ask)."""
        info = workflow.info()
        return act.RunBudget(
            self._status.cost_usd,
            self.max_run,
            self.max_day,
            budget.ledger_key(self._inp.namespace, self._inp.agent, info.task_queue)
            if self.max_day > 0
            else "",
        )

    def _run_fits(self, reserve: float) -> budget.BudgetDecision:
        return budget.check(self._status.cost_usd, reserve, self.max_run)

    async def afford(self, reserve: float) -> None:
        """Before an LLM step: return once ``reserve`` fits the run's budget (paused
        until it does); raises :class:`failures.BudgetStopError` when it never does."""
        decision = self._run_fits(reserve)
        if not decision.fits:
            self._status.reserved_usd = 0.0
            await self._pause(decision, lambda: self._run_fits(reserve).fits)
        self._status.reserved_usd = reserve

    @staticmethod
    def search_reserve(max_tokens: int, prompt_tokens: int, price: Pricing) -> float:
        """What one search through the model must fit: its request, its fee, and its
        results, which the API bills as input. A run recorded before the results were
        reserved replays with the request and the fee alone (its pauses were decided
        on that), so its decisions come out as they did."""
        results = pricing.WEB_SEARCH_RESULT_TOKENS
        if not workflow.patched(SEARCH_RESULTS_RESERVED_PATCH):
            results = 0
        return budget.reserve_usd(
            max_tokens, prompt_tokens, price, web_searches=1, result_tokens=results
        )

    async def step(self, reserve: float, call: Callable[[], Awaitable[T]]) -> T:
        """An LLM step: afford it, run it, and pause and run it again if the activity
        itself was refused a request (a re-ask or retry over the run's budget, or
        the day's)."""
        while True:
            await self.afford(reserve)
            try:
                return await call()
            except ActivityError as err:
                await self.refused(err)

    async def refused(self, err: ActivityError) -> None:
        """After an activity failed with ``err``: when it was refused a request (the
        run's budget or the day's), account what it spent and pause until that budget
        fits again, for the caller to run it again; any other failure is raised."""
        refusal = failures.budget_refusal(err)
        if refusal is None:
            raise err
        self._account(err)
        await self._pause(refusal, self._fits_again(refusal))

    def _fits_again(self, refused: budget.BudgetDecision) -> Callable[[], bool]:
        if refused.scope == budget.DAY:
            limit = refused.limit_usd
            return lambda: (
                self.max_day > limit + 1e-12 or budget.day_of(workflow.now()) != refused.day
            )
        spent_then, reserve = refused.spent_usd, refused.reserve_usd
        # The activity counted its own spend too; what it spent is in the status now.
        return lambda: (
            budget.check(max(self._status.cost_usd, spent_then), reserve, self.max_run).fits
        )

    # -- the pause ----------------------------------------------------------------------

    async def _pause(self, refused: budget.BudgetDecision, fits: Callable[[], bool]) -> None:
        timeout = self._inp.settings.budget_pause_seconds
        if timeout <= 0 or not workflow.patched(BUDGET_PAUSE_PATCH):
            raise failures.BudgetStopError(refused)
        st = self._status
        was, message = st.phase, st.message
        st.phase, st.stopped_by = Phase.AWAITING_BUDGET, refused.scope
        st.message = f"paused: {refused.message}; raise it with `steadfast budget`"
        if refused.scope == budget.DAY:
            st.message += " --max-usd-per-day, or wait for the next UTC day"
        self._publish()
        await workflow.execute_local_activity(
            act.RECORD_RUN,
            act.RecordRunInput(
                self._inp.agent,
                self._inp.namespace,
                Phase.AWAITING_BUDGET.value,
                st.cost_usd,
                refused.scope,
            ),
            start_to_close_timeout=timedelta(seconds=10),
        )
        deadline = workflow.now() + timedelta(seconds=timeout)
        while not fits():
            left = (deadline - workflow.now()).total_seconds()
            if left <= 0:
                raise failures.BudgetStopError(refused)
            if refused.scope == budget.DAY:
                # The day turning is a reason to ask the ledger again.
                left = min(left, budget.seconds_to_next_day(workflow.now()))
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(
                    fits, timeout=timedelta(seconds=left), timeout_summary="budget pause"
                )
        st.phase, st.message, st.stopped_by = was, message, ""
        self._publish()


def publish_spend(inp: ResearchInput, status: RunStatus, published: Spend) -> Spend:
    """Keep the spend so far in the memo, where visibility lists it (see Spend);
    returns what the memo holds now."""
    # A run of the lean shape keeps the memo (its input says so, or that one patch
    # marker); the runs recorded before it carry the memo's own, and runs before the
    # memo neither.
    if not (mailing.lean(inp) or workflow.patched(SPEND_MEMO_PATCH)):
        return published  # a run recorded before the memo existed: replay it as it ran
    st = status
    spend = Spend(st.cost_usd, st.input_tokens, st.output_tokens, st.llm_calls, st.retries)
    if spend != published:  # one history event per change, no more
        workflow.upsert_memo({SPEND_MEMO: spend})
    return spend

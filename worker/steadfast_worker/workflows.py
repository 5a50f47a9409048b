"""``ResearchWorkflow``: topic -> research -> save -> (approval) -> email.

Research is the fixed pipeline here (queries, searches, one report) or Claude's
tool-use loop (:mod:`.deep`), as ``spec.research.strategy`` says. Deterministic
code only: every side effect is an activity (by name, so the sandbox never loads
the I/O libraries' code paths); time, randomness and waiting come from
``workflow.now()``, ``workflow.uuid4()`` and ``workflow.sleep()``. The decisions --
budget checks, which policy retries what, when to stop -- are pure functions from
:mod:`steadfast_contract.budget`, :mod:`.pricing` and :mod:`.retry`, fed only with
the input and activity results, so a replay decides as the original run did; the
pause before a call no budget covers is :mod:`.budgeting`'s. Cost and retries are
accounted from what activities report back, so the ``status`` query and the
result carry the figures a user is billed for.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from temporalio.contrib.workflow_streams import WorkflowStream

    # By full name, never ``from steadfast_worker import x``: this module's package is
    # the sandbox's own copy, so a submodule reached through it is not passed
    # through but executed again for every workflow instance (tests/unit/
    # test_sandbox_imports.py).
    import steadfast_worker.accounting as accounting
    import steadfast_worker.budgeting as budgeting
    import steadfast_worker.deep as deep
    import steadfast_worker.errors as errors
    import steadfast_worker.failures as failures
    import steadfast_worker.pipeline as pipeline
    import steadfast_worker.review as review
    import steadfast_worker.savewait as savewait
    from steadfast_contract import activities as act
    from steadfast_contract import pricing
    from steadfast_contract.models import (
        APPROVAL_GATE_PATCH,
        APPROVE_UPDATE,
        BUDGET_KEEPS_GATHERED_PATCH,
        BUDGET_UPDATE,
        CANCEL_HOLDS_MAIL_PATCH,
        CANCEL_KEEPS_GATHERED_PATCH,
        CANCEL_MID_STEP_PATCH,
        FAILURE_KEEPS_GATHERED_PATCH,
        REJECT_SIGNAL,
        REPORT_TOPIC,
        STATUS_QUERY,
        STATUS_TOPIC,
        STEP_OF_PHASE,
        WORKFLOW_NAME,
        ApproveInput,
        ApproveResult,
        Phase,
        RejectInput,
        ReportChunk,
        ResearchInput,
        ResearchResult,
        RetryPolicySpec,
        RunStatus,
        SetBudgetInput,
        SetBudgetResult,
        Spend,
    )
    from steadfast_contract.retry import to_retry_policy
    from steadfast_worker.mailing import send_review

LLM_START_TO_CLOSE = act.LLM_START_TO_CLOSE
IO_START_TO_CLOSE = act.IO_START_TO_CLOSE


@workflow.defn(name=WORKFLOW_NAME)
class ResearchWorkflow:
    @workflow.init
    def __init__(self, inp: ResearchInput) -> None:
        self._inp = inp
        carried = inp.resume.status if inp.resume is not None else None
        self._status = carried or RunStatus(topic=inp.topic)
        self._stream = WorkflowStream(inp.stream)
        self._approval: ApproveInput | None = None
        self._rejection: RejectInput | None = None
        self._markdown_chars = 0
        self._mailing = False
        self._accounted = failures.Accounted()
        self._published_spend = Spend()
        self._gate = budgeting.BudgetGate(
            inp, self._status, self._publish_status, self._account_failure
        )

    # -- handlers ------------------------------------------------------------------

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> RunStatus:
        return replace(self._status)

    @workflow.update(name=APPROVE_UPDATE)
    async def approve(self, inp: ApproveInput) -> ApproveResult:
        self._approval = inp
        return ApproveResult(True, f"approved by {inp.reviewer.strip()}")

    @approve.validator
    def _validate_approve(self, inp: ApproveInput) -> None:
        # Validator rejections never reach history, so a typo costs nothing.
        decided = self._approval is not None or self._rejection is not None
        refusal = review.approval_refusal(
            inp, self._inp.settings.require_approval, self._status.phase, decided
        )
        if refusal:
            raise ValueError(refusal)

    @workflow.update(name=BUDGET_UPDATE)
    async def set_budget(self, inp: SetBudgetInput) -> SetBudgetResult:
        return self._gate.apply(inp)

    @set_budget.validator
    def _validate_budget(self, inp: SetBudgetInput) -> None:
        refusal = self._gate.refusal(inp)
        if refusal:
            raise ValueError(refusal)

    @workflow.signal(name=REJECT_SIGNAL)
    def reject(self, inp: RejectInput) -> None:
        if self._approval is not None or self._rejection is not None:
            return
        if self._status.phase != Phase.AWAITING_APPROVAL and workflow.patched(APPROVAL_GATE_PATCH):
            # A signal has no answer to refuse with; the log says why nothing happened.
            workflow.logger.warning(
                "reject by %r ignored: the run is %s, not %s",
                inp.reviewer,
                self._status.phase.value,
                Phase.AWAITING_APPROVAL.value,
            )
            return
        self._rejection = inp

    # -- the run -------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: ResearchInput) -> ResearchResult:
        # A failed run has no result, so its final status travels as the failure's
        # details: observers read the cost of failed and budget-stopped runs from it.
        try:
            price = pricing.lookup(inp.settings.model, inp.settings.pricing)
        except pricing.UnknownModelError as err:
            await self._finish(Phase.FAILED, str(err))
            raise ApplicationError(
                str(err), replace(self._status), type=errors.MISCONFIGURED, non_retryable=True
            ) from None
        try:
            if inp.settings.strategy == "deep":
                markdown = await deep.research(self, inp, price)
            else:
                markdown = await pipeline.research(self, inp, price)
            await self._deliver(inp, markdown)
        except failures.BudgetStopError as stop:
            raise await self._exhausted(inp, stop) from None
        except failures.RefusedError as stop:
            raise await self._refused(inp, stop) from None
        except failures.StepFailedError as stop:
            # The marker is recorded only by a run that fails so with something to keep.
            kept = (
                stop.gathered
                if stop.gathered and workflow.patched(FAILURE_KEEPS_GATHERED_PATCH)
                else ""
            )
            raise await self._failed(inp, stop.cause, kept) from stop.cause
        except failures.CancelledKeepingError as stop:
            raise await self._cancelled_keeping(inp, stop) from stop.cause
        except ActivityError as err:
            if failures.cancelled(err) and workflow.patched(CANCEL_MID_STEP_PATCH):
                if err not in self._accounted:
                    self._account_failure(err)
                await self._finish(Phase.CANCELLED, self._cancelled_message())
                raise asyncio.CancelledError(err.message) from err
            raise await self._failed(inp, err) from err
        except asyncio.CancelledError:
            await self._finish(Phase.CANCELLED, self._cancelled_message())
            raise
        return ResearchResult(replace(self._status), self._markdown_chars)

    async def _cancelled_keeping(
        self, inp: ResearchInput, stop: failures.CancelledKeepingError
    ) -> BaseException:
        """End a run cancelled before its report, saving what it had gathered as an
        unfinished report (never mailed); the error to end it with. Runs recorded before
        either patch end as they did: a cancelled activity ``Failed`` (before
        ``cancel-mid-step``), anything else ``Cancelled`` with nothing saved."""
        cause = stop.cause
        if isinstance(cause, ActivityError):
            if not workflow.patched(CANCEL_MID_STEP_PATCH):
                return await self._failed(inp, cause)
            if cause not in self._accounted:
                self._account_failure(cause)
        if not workflow.patched(CANCEL_KEEPS_GATHERED_PATCH):
            await self._finish(Phase.CANCELLED, self._cancelled_message())
            return asyncio.CancelledError("cancelled")
        message = "cancelled" + await self._keep_gathered(inp, stop.gathered, keep_step=True)
        await self._finish(Phase.CANCELLED, message + "; no review mail was sent")
        return asyncio.CancelledError(message)

    async def _exhausted(
        self, inp: ResearchInput, stop: failures.BudgetStopError
    ) -> ApplicationError:
        """End the run BudgetExhausted, saving what it had gathered as an unfinished
        report (never mailed); the error to fail it with."""
        decision, message = stop.decision, stop.decision.message
        if stop.gathered and workflow.patched(BUDGET_KEEPS_GATHERED_PATCH):
            message += await self._keep_gathered(inp, stop.gathered, keep_step=True)
        await self._finish(Phase.BUDGET_EXHAUSTED, message)
        return ApplicationError(
            f"run budget exhausted: {decision.message}",
            replace(self._status),
            type=errors.BUDGET_EXHAUSTED,
            non_retryable=True,
        )

    async def _refused(self, inp: ResearchInput, stop: failures.RefusedError) -> ApplicationError:
        """End the run ``Failed`` after the model refused a step, saving what the run
        had gathered as an unfinished report (never mailed); the error to fail it with."""
        if stop.cause not in self._accounted:
            self._account_failure(stop.cause)
        _, message = failures.describe(stop.cause)
        if stop.gathered:
            message += await self._keep_gathered(inp, stop.gathered)
        await self._finish(Phase.FAILED, message)
        return ApplicationError(
            message, replace(self._status), type=errors.MODEL_REFUSED, non_retryable=True
        )

    async def _failed(
        self, inp: ResearchInput, cause: ActivityError, gathered: str = ""
    ) -> ApplicationError:
        """End the run ``Failed`` after the activity that failed with ``cause``, saving
        ``gathered`` (what the run had gathered, if anything) as an unfinished report,
        never mailed; the error to fail it with."""
        if cause not in self._accounted:
            self._account_failure(cause)
        kind, message = failures.describe(cause)
        if gathered:
            message += await self._keep_gathered(inp, gathered, keep_step=True)
        await self._finish(Phase.FAILED, message)
        return ApplicationError(message, replace(self._status), type=kind, non_retryable=True)

    async def _keep_gathered(
        self, inp: ResearchInput, gathered: str, *, keep_step: bool = False
    ) -> str:
        """Save what a run stopped before its report had gathered (marked unfinished,
        never mailed); the words that add it to the run's message. With ``keep_step``
        the status keeps saying which step stopped the run, not the save's."""
        step = self._status.step
        await self._save(inp, gathered)
        if keep_step:
            self._status.step = step
        return f"; what the run gathered is saved as report {self._status.report_id}"

    async def _deliver(self, inp: ResearchInput, markdown: str) -> None:
        """Save the paid report, wait for its review if asked, mail it; a run cancelled
        while it saved ends there, its report saved and nobody mailed."""
        if await self._save(inp, markdown):
            raise asyncio.CancelledError("cancelled while saving its report")
        if inp.settings.require_approval and not await self._reviewed(
            inp.settings.approval_timeout_seconds
        ):
            return

        self._enter(Phase.EMAILING)
        await self._email(inp, markdown)
        await self._finish(Phase.COMPLETED, self._status.message or "report saved")

    async def _save(self, inp: ResearchInput, markdown: str) -> bool:
        """Save ``markdown`` as the run's report (waiting out a store that is down, and
        a cancel of the run); whether the run was cancelled while it saved."""
        s, info = inp.settings, workflow.info()
        self._markdown_chars = len(markdown)
        self._enter(Phase.SAVING)
        saved = await savewait.save_report(
            act.SaveReportInput(
                info.workflow_id,
                info.run_id,
                str(workflow.uuid4()),
                inp.topic,
                markdown,
                inp.agent,
                inp.namespace,
                self._status.cost_usd,
                deep.conversation_key() if s.strategy == "deep" else "",
            ),
            s,
            self._status,
            start_to_close=IO_START_TO_CLOSE,
        )
        accounting.add_attempts(self._status, act.SAVE_REPORT, saved.output.attempt)
        self._status.report_id = saved.output.report_id
        return saved.cancelled

    async def _reviewed(self, timeout_seconds: float) -> bool:
        """Wait for the review of the saved report; False when the run ends here.

        The wait is bounded: a report nobody reviews ends the run ``ApprovalExpired``
        rather than holding it open (and its Schedule's next start) for ever.
        """
        self._enter(Phase.AWAITING_APPROVAL)

        def decided() -> bool:
            return self._approval is not None or self._rejection is not None

        if workflow.patched(APPROVAL_GATE_PATCH):
            # An answer that lands with the timer still counts: outcome() looks at both.
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(decided, timeout=timedelta(seconds=timeout_seconds))
        else:
            await workflow.wait_condition(decided)  # a run recorded before the timeout existed
        end = review.outcome(self._approval, self._rejection, timeout_seconds)
        self._status.reviewer = end.reviewer
        if end.phase is None:
            return True
        self._status.email = "skipped"
        await self._finish(end.phase, end.message)
        return False

    async def _email(self, inp: ResearchInput, markdown: str) -> None:
        """Mail the review request. A cancel that comes while the mail step runs cannot
        hold the mail back (the SMTP server may have it already): the step runs to its
        end, so the status says what became of the mail, and the run ends cancelled."""
        self._mailing = True
        sending = asyncio.ensure_future(
            send_review(inp, self._status, markdown, self._activity, IO_START_TO_CLOSE)
        )
        try:
            await asyncio.shield(sending)
        except asyncio.CancelledError as cancel:
            if not workflow.patched(CANCEL_HOLDS_MAIL_PATCH):
                sending.cancel()  # as runs recorded before: the cancel reaches the activity
                await sending
                raise
            try:
                await sending
            except ActivityError as err:
                self._account_failure(err)  # status.email says "failed"
            raise cancel from None

    def _cancelled_message(self) -> str:
        """What the status of a run ending cancelled says (and its email, when the
        cancel held the mail back)."""
        st = self._status
        if not st.report_id or not workflow.patched(CANCEL_HOLDS_MAIL_PATCH):
            return "cancelled"
        if not self._mailing:
            st.email = "skipped"
        return review.cancel_message(st.report_id, self._mailing, st.email)

    # -- helpers -------------------------------------------------------------------

    async def _activity(
        self,
        name: str,
        arg: Any,
        result_type: type[Any],
        policy: RetryPolicySpec,
        start_to_close: timedelta,
    ) -> Any:
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=start_to_close,
            heartbeat_timeout=timedelta(seconds=self._inp.settings.heartbeat_timeout_seconds),
            retry_policy=to_retry_policy(policy),
        )

    def _enter(self, phase: Phase) -> None:
        self._status.phase = phase
        self._status.step = STEP_OF_PHASE[phase]
        self._publish_status()

    def _publish_status(self) -> None:
        self._stream.topic(STATUS_TOPIC, type=RunStatus).publish(replace(self._status))

    def _publish_tail(self, tail: ReportChunk | None, whole: str) -> None:
        """The end of a reply its activity returned instead of signalling it (taken
        from ``whole``, the reply's text, when the tail carries none)."""
        if tail is None:
            return
        text = tail.text or whole[tail.offset :]
        if text:
            self._stream.topic(REPORT_TOPIC, type=ReportChunk).publish(replace(tail, text=text))

    def _account_llm(self, call: act.LlmCall, attempt: int, activity: str) -> None:
        accounting.add_llm(self._status, call, attempt, activity)
        self._publish_spend()

    def _account_failure(self, err: ActivityError) -> None:
        self._accounted.add(err)
        accounting.add_failure(self._status, failures.failure_details(err), err.activity_type)
        self._publish_spend()

    def _publish_spend(self) -> None:
        self._published_spend = budgeting.publish_spend(
            self._inp, self._status, self._published_spend
        )

    async def _finish(self, phase: Phase, message: str) -> None:
        self._status.phase = phase
        self._status.message = message
        self._status.reserved_usd = 0.0
        self._publish_status()
        await workflow.execute_local_activity(
            act.RECORD_RUN,
            accounting.run_record(self._inp, self._status),
            start_to_close_timeout=timedelta(seconds=10),
        )

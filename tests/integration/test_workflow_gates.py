"""Budget exhaustion and the approval gate (approve update with validator, reject signal)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from tests.integration.conftest import HarnessFactory
from tests.support.temporal import failure_of

from steadfast_contract import budget, pricing
from steadfast_contract.models import (
    APPROVE_UPDATE,
    REJECT_SIGNAL,
    STATUS_QUERY,
    ApproveInput,
    ApproveResult,
    Phase,
    RejectInput,
    RunStatus,
)
from steadfast_worker.pipeline import QUERY_PROMPT_CHARS

pytestmark = pytest.mark.integration


async def _wait_phase(handle: WorkflowHandle[Any, Any], phase: Phase) -> RunStatus:
    for _ in range(200):
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        if status.phase == phase:
            return status
        assert not status.phase.terminal, status
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {phase}: {status}")


@pytest.mark.hostile
async def test_budget_exhausted_before_the_call_that_would_overspend(
    harness: HarnessFactory,
) -> None:
    price = pricing.lookup("claude-sonnet-4-6")
    # Room for the query call's reservation, not for the report's.
    limit = budget.reserve_usd(1000, budget.estimate_tokens(QUERY_PROMPT_CHARS), price) * 1.05
    async with harness({"budget": {"maxUSDPerRun": limit, "pauseTimeout": "0s"}}) as h:
        handle = await h.start("budget squeeze")
        cause = await failure_of(handle)
        assert cause.type == "BudgetExhausted"
        assert cause.non_retryable

        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.phase == Phase.BUDGET_EXHAUSTED
        assert status.step == 3  # stopped before writing
        assert status.llm_calls == 1
        assert 0 < status.cost_usd <= limit
        assert "would exceed" in status.message
        assert not [k for k in h.sim.served("llm") if "/ask" not in k and k.startswith(handle.id)]
        # No report was written: the search results it paid for are kept, marked unfinished.
        store = await h.store()
        (saved,) = await store.list_reports(handle.id)
        assert saved.report_id == status.report_id
        assert "*Unfinished: the run's budget ran out before the report." in saved.markdown
        assert h.metric("steadfast_budget_exhausted_total") == 1
        assert h.metric("steadfast_runs_total", phase="BudgetExhausted") == 1


async def test_budget_below_one_call_spends_nothing(harness: HarnessFactory) -> None:
    async with harness({"budget": {"maxUSDPerRun": 0.001, "pauseTimeout": "0s"}}) as h:
        handle = await h.start("no budget at all")
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert (status.phase, status.step, status.cost_usd) == (Phase.BUDGET_EXHAUSTED, 1, 0.0)
        assert not h.sim.served("llm")


async def test_approval_requires_a_reviewer_then_mails(harness: HarnessFactory) -> None:
    async with harness({"notify": {"requireApproval": True}}) as h:
        handle = await h.start("needs approval")
        await _wait_phase(handle, Phase.AWAITING_APPROVAL)
        assert not h.smtp.messages_for(handle.id)

        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update(APPROVE_UPDATE, ApproveInput(reviewer="  "))
        assert "reviewer is required" in str(info.value.cause)
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.phase == Phase.AWAITING_APPROVAL

        answer = await handle.execute_update(
            APPROVE_UPDATE, ApproveInput(reviewer="alice"), result_type=ApproveResult
        )
        assert answer.accepted
        result = await handle.result()
        assert result.status.phase == Phase.COMPLETED
        assert result.status.reviewer == "alice"
        assert result.status.email == "sent"
        mails = h.smtp.messages_for(handle.id)
        assert len(mails) == 1
        assert "Approved for review by alice" in mails[0].get_content()

        # The run is over: a second approval has nothing to land on.
        with pytest.raises(RPCError, match="already completed"):
            await handle.execute_update(APPROVE_UPDATE, ApproveInput(reviewer="bob"))


async def test_rejection_sends_no_mail(harness: HarnessFactory) -> None:
    async with harness({"notify": {"requireApproval": True}}) as h:
        handle = await h.start("will be rejected")
        await _wait_phase(handle, Phase.AWAITING_APPROVAL)
        await handle.signal(REJECT_SIGNAL, RejectInput(reviewer="carol", reason="thin sources"))
        result = await handle.result()
        assert result.status.phase == Phase.REJECTED
        assert result.status.email == "skipped"
        assert result.status.reviewer == "carol"
        assert "thin sources" in result.status.message
        assert result.status.report_id
        assert not h.smtp.messages_for(handle.id)
        store = await h.store()
        assert await store.count_reports(handle.id) == 1
        assert await store.email_status(handle.id, handle.result_run_id or "") is None
        assert h.metric("steadfast_runs_total", phase="Rejected") == 1


async def test_approve_is_refused_when_the_run_needs_no_approval(harness: HarnessFactory) -> None:
    async with harness() as h:
        handle = await h.start("no gate")
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update(APPROVE_UPDATE, ApproveInput(reviewer="dave"))
        assert "does not require approval" in str(info.value.cause)
        assert (await handle.result()).status.phase == Phase.COMPLETED


async def test_cancelled_run_records_its_phase(harness: HarnessFactory) -> None:
    async with harness({"notify": {"requireApproval": True}}) as h:
        handle = await h.start("cancelled while waiting")
        await _wait_phase(handle, Phase.AWAITING_APPROVAL)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.phase == Phase.CANCELLED
        assert not h.smtp.messages_for(handle.id)
        # The status says the report is kept, and which it is, and that nobody was mailed.
        assert status.report_id
        assert status.report_id in status.message, status.message
        assert status.email == "skipped"
        assert h.metric("steadfast_runs_total", phase="Cancelled") == 1


@pytest.mark.hostile
async def test_approval_before_the_report_exists_is_refused(harness: HarnessFactory) -> None:
    """An approval (or rejection) sent while queries are generated lands on nothing.

    Accepted, it would have mailed a report nobody reviewed as soon as it was saved.
    """
    async with harness({"notify": {"requireApproval": True}}) as h:
        h.sim.set_faults({"llm": {"latency_ms": 4000}})  # hold the run in GeneratingQueries
        handle = await h.start("approved too early")
        await _wait_phase(handle, Phase.GENERATING_QUERIES)

        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update(APPROVE_UPDATE, ApproveInput(reviewer="eve"))
        assert "not ready for review (phase GeneratingQueries)" in str(info.value.cause)
        # The signal has no answer to refuse with: it is ignored (and logged).
        await handle.signal(REJECT_SIGNAL, RejectInput(reviewer="mallory", reason="early"))
        h.sim.reset()

        status = await _wait_phase(handle, Phase.AWAITING_APPROVAL)
        assert status.reviewer == ""
        assert not h.smtp.messages_for(handle.id)
        await handle.execute_update(APPROVE_UPDATE, ApproveInput(reviewer="alice"))
        result = await handle.result()
        assert (result.status.phase, result.status.reviewer) == (Phase.COMPLETED, "alice")
        [mail] = h.smtp.messages_for(handle.id)
        assert "Approved for review by alice" in mail.get_content()


@pytest.mark.hostile
async def test_an_unreviewed_report_expires_without_mail(harness: HarnessFactory) -> None:
    async with harness({"notify": {"requireApproval": True, "approvalTimeout": "2s"}}) as h:
        handle = await h.start("nobody reviews this")
        await _wait_phase(handle, Phase.AWAITING_APPROVAL)
        result = await asyncio.wait_for(handle.result(), timeout=30)
        status = result.status
        assert status.phase == Phase.APPROVAL_EXPIRED
        assert status.phase.terminal
        assert (status.email, status.reviewer) == ("skipped", "")
        assert status.message == "no approval within 2s"
        assert status.report_id  # the paid-for report stays saved
        assert not h.smtp.messages_for(handle.id)
        store = await h.store()
        assert await store.count_reports(handle.id) == 1
        assert await store.email_status(handle.id, handle.result_run_id or "") is None
        assert h.metric("steadfast_runs_total", phase="ApprovalExpired") == 1
        # The run is over and holds no worker: a late approval has nothing to land on.
        with pytest.raises(RPCError, match="already completed"):
            await handle.execute_update(APPROVE_UPDATE, ApproveInput(reviewer="late"))

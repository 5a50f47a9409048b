"""A run its budget stops keeps what it paid to gather.

A deep run that runs out of budget mid-loop (the usual way a long run ends early)
has paid for its searches, pages and recorded findings; a pipeline run stopped
before its report has paid for its queries and searches. ``BudgetExhausted`` used to
save nothing: the findings lived only in workflow state and in the transcript, which
the retention sweep deletes a day after. Now the run saves what it gathered as a
report marked unfinished, as a refused run does, never mails it, and its status
names the report.
"""

from __future__ import annotations

import uuid

import pytest
from tests.integration.conftest import Harness, HarnessFactory
from tests.integration.test_budget_pause import squeezed_limit
from tests.integration.test_deep_agent import billed_usd, deep, plan
from tests.support.temporal import failure_of

from steadfast_contract import budget, errortypes, pricing
from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_worker.activities.storage import StoredReport

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(180)]


async def ended(
    h: Harness, topic: str, kind: str, phase: Phase
) -> tuple[RunStatus, list[StoredReport]]:
    """Run ``topic`` until it fails with ``kind`` in ``phase``, mailing nobody; its
    status and the reports it saved."""
    handle = await h.start(topic)
    cause = await failure_of(handle)
    assert cause.type == kind, cause
    status = await handle.query(STATUS_QUERY, result_type=RunStatus)
    assert status.phase == phase
    store = await h.store()
    try:
        saved = await store.list_reports(handle.id)
    finally:
        await store.close()
    assert h.smtp.messages_for(handle.id) == []  # an unfinished report is not mailed
    return status, saved


def kept(
    saved: list[StoredReport], status: RunStatus, section: str
) -> tuple[StoredReport, list[str]]:
    """The one unfinished report a run saved, checked against its status (its id, the
    message naming it) and holding ``section``; the report and its numbered items."""
    (report,) = saved
    assert report.report_id == status.report_id
    assert f"saved as report {status.report_id}" in status.message
    assert f"## {section}" in report.markdown
    numbered = [line for line in report.markdown.splitlines() if line[:1].isdigit()]
    assert numbered
    return report, numbered


async def stopped(h: Harness, topic: str) -> tuple[RunStatus, list[StoredReport]]:
    """Run ``topic`` until its budget stops it; its status and the reports it saved."""
    return await ended(h, topic, errortypes.BUDGET_EXHAUSTED, Phase.BUDGET_EXHAUSTED)


async def test_a_deep_run_out_of_budget_keeps_its_findings(harness: HarnessFactory) -> None:
    # A turn reserves up to ~$0.07 and spends ~$0.01: turns 1 and 2 fit, a later one not.
    overrides = {**deep(8), "budget": {"maxUSDPerRun": 0.09, "pauseTimeout": "0s"}}
    async with harness(overrides) as h:
        h.sim.set_faults(plan(8))
        status, saved = await stopped(h, "out of budget mid loop")
        assert 1 < status.turn < 8
        assert status.findings > 0
        report, numbered = kept(saved, status, "Findings recorded")
        assert report.markdown.startswith("# out of budget mid loop\n")
        assert f"the run's budget ran out at turn {status.turn}" in report.markdown
        assert len(numbered) == status.findings
        assert all("(http://" in line for line in numbered)  # each with its source


async def test_a_pipeline_run_out_of_budget_before_its_report_keeps_its_sources(
    harness: HarnessFactory,
) -> None:
    # Room for the query call's reservation, not for the report's.
    overrides = {"budget": {"maxUSDPerRun": squeezed_limit(), "pauseTimeout": "0s"}}
    async with harness(overrides) as h:
        status, saved = await stopped(h, "out of budget before the report")
        assert status.llm_calls == 1
        report, numbered = kept(saved, status, "Sources found")
        assert "the run's budget ran out before the report" in report.markdown
        assert all("(http" in line for line in numbered)  # each search result's address


async def test_a_pipeline_run_its_day_stops_mid_search_counts_and_keeps_the_searches_it_paid(
    harness: HarnessFactory,
) -> None:
    """Searches through the model (``anthropic-web-search``) run at once, each granted by
    the day's ledger; the day grants two of three. The granted two were paid for, but
    the run counted them only after the pause, and a pause that ran out dropped them:
    its status said $0.0008 of $0.0667 billed and it saved nothing (the audit)."""
    price = pricing.lookup("claude-sonnet-4-6")
    one_search = budget.reserve_usd(1000, 40, price, web_searches=1)
    overrides = {
        "agent": f"s-{uuid.uuid4().hex[:8]}",
        "search": {"provider": "anthropic-web-search"},
        # The query call's reservation and two searches', not a third.
        "budget": {
            "maxUSDPerRun": 1.0,
            "maxUSDPerDay": squeezed_limit() + 2 * one_search + 0.001,
            "pauseTimeout": "0s",
        },
    }
    async with harness(overrides) as h:
        # Slow enough that all three ask the day before any settles.
        h.sim.set_faults({"llm": {"latency_ms": 800, "match": "Search the web"}})
        topic = f"stopped mid-search {uuid.uuid4().hex[:6]}"
        status, saved = await stopped(h, topic)
        entries = [e for e in h.sim.entries("llm") if e["key"].startswith(h.workflow_id(topic))]
        searched = [e for e in entries if "server_tool_use" in (e["billed"] or {})]
        print(f"{len(searched)} searches billed; the run counted ${status.cost_usd:.4f}")
        assert len(searched) == 2
        assert status.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-6)
        (report,) = saved
        assert "the day's budget ran out during its searches" in report.markdown
        assert "## Sources found" in report.markdown

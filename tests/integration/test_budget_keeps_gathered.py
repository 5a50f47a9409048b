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

import pytest
from tests.integration.conftest import Harness, HarnessFactory
from tests.integration.test_budget_pause import squeezed_limit
from tests.integration.test_deep_agent import deep, plan
from tests.support.temporal import failure_of

from steadfast_contract import errortypes
from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_worker.activities.storage import StoredReport

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(180)]


async def stopped(h: Harness, topic: str) -> tuple[RunStatus, list[StoredReport]]:
    """Run ``topic`` until its budget stops it; its status and the reports it saved."""
    handle = await h.start(topic)
    cause = await failure_of(handle)
    assert cause.type == errortypes.BUDGET_EXHAUSTED
    status = await handle.query(STATUS_QUERY, result_type=RunStatus)
    assert status.phase == Phase.BUDGET_EXHAUSTED
    store = await h.store()
    try:
        saved = await store.list_reports(handle.id)
    finally:
        await store.close()
    assert h.smtp.messages_for(handle.id) == []  # an unfinished report is not mailed
    return status, saved


async def test_a_deep_run_out_of_budget_keeps_its_findings(harness: HarnessFactory) -> None:
    # A turn reserves up to ~$0.07 and spends ~$0.01: turns 1 and 2 fit, a later one not.
    overrides = {**deep(8), "budget": {"maxUSDPerRun": 0.09, "pauseTimeout": "0s"}}
    async with harness(overrides) as h:
        h.sim.set_faults(plan(8))
        status, saved = await stopped(h, "out of budget mid loop")
        assert 1 < status.turn < 8
        assert status.findings > 0
        (report,) = saved
        assert report.report_id == status.report_id
        assert f"saved as report {status.report_id}" in status.message
        assert report.markdown.startswith("# out of budget mid loop\n")
        assert f"the run's budget ran out at turn {status.turn}" in report.markdown
        assert "## Findings recorded" in report.markdown
        numbered = [line for line in report.markdown.splitlines() if line[:1].isdigit()]
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
        (report,) = saved
        assert report.report_id == status.report_id
        assert "the run's budget ran out before the report" in report.markdown
        assert "## Sources found" in report.markdown
        numbered = [line for line in report.markdown.splitlines() if line[:1].isdigit()]
        assert numbered
        assert all("(http" in line for line in numbered)  # each search result's address

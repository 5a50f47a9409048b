"""A run whose report step fails for good keeps what it paid to gather.

A budget stop and a model's refusal already saved a run's findings (the pipeline's
sources) as an unfinished report. Any other failure of the step that writes the
report did not: a deep run whose conversation the model refused as too long for its
window (a ``model.contextTokens`` set larger than the model's, or text that takes
more tokens than the estimate's four characters a token, as Chinese or Japanese
pages do) failed at turn n with its paid findings in workflow state only, which the
retention sweep forgets; a pipeline run whose report request failed for good lost
its sources the same way. Now both save an unfinished report, mail nobody, and fail
as before, their status naming the report.
"""

from __future__ import annotations

import pytest
from tests.integration.conftest import Harness, HarnessFactory
from tests.integration.test_budget_keeps_gathered import ended, kept
from tests.integration.test_deep_agent import deep, plan

from steadfast_contract import errortypes
from steadfast_contract.models import Phase, RunStatus
from steadfast_worker.activities.storage import StoredReport

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(180)]


async def failed(h: Harness, topic: str, kind: str) -> tuple[RunStatus, list[StoredReport]]:
    """Run ``topic`` until it fails with ``kind``; its status and the reports it saved."""
    return await ended(h, topic, kind, Phase.FAILED)


async def test_a_deep_run_refused_as_too_long_keeps_its_findings(harness: HarnessFactory) -> None:
    # The agent believes its model's window is 1M tokens; the model's is 30,000.
    model = {"maxTokens": 4000, "contextTokens": 1_000_000}
    async with harness({**deep(20), "model": model}) as h:
        faults = plan(20)
        faults["llm"]["context_tokens"] = 30_000
        faults["pages"] = {"answer_bytes": 40_000}  # each page read is 12,000 characters
        h.sim.set_faults(faults)
        status, saved = await failed(h, "a read too long", errortypes.BAD_REQUEST)
        refused = [e for e in h.sim.entries("llm") if e["outcome"] == "rejected"]
        assert len(refused) == 1  # a 400 is not asked again
        assert status.findings > 0
        report, numbered = kept(saved, status, "Findings recorded")
        assert "exceed context limit" in status.message
        assert report.markdown.startswith("# a read too long\n")
        assert f"turn {status.turn}" in report.markdown
        assert len(numbered) == status.findings


async def test_a_pipeline_run_whose_report_fails_keeps_its_sources(
    harness: HarnessFactory,
) -> None:
    async with harness() as h:
        # The report's request is refused for good (a 400); the queries' was served.
        h.sim.set_faults({"llm": {"first_n": 1, "kind": "400", "match": "research report"}})
        status, saved = await failed(h, "a report that cannot be asked", errortypes.BAD_REQUEST)
        assert status.llm_calls == 1
        _, numbered = kept(saved, status, "Sources found")
        assert all("(http" in line for line in numbered)

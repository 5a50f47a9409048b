"""A reply the model could not finish, or was not allowed to: never passed off as a report.

The Messages API ends a reply with ``refusal`` when its classifiers stop it (a fragment,
billed up to there; the same conversation would be refused again) and with
``max_tokens`` when the model runs out of room. A refused fragment used to be saved,
mailed and reported ``Completed`` as the run's report, and a refused query list was
re-asked, and paid for, until the re-asks ran out. The simulator refuses a prompt
holding the API's documented test string (here in a search result, as a page anyone
can write would carry it).
"""

from __future__ import annotations

import uuid

import pytest
from tests.integration.conftest import HarnessFactory
from tests.integration.test_deep_agent import billed_usd, deep, plan, the_report
from tests.support.histories import third_search
from tests.support.temporal import failure_of

from steadfast_contract import stops
from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_dev.sim.messages import REFUSAL_TRIGGER

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

HOSTILE = f"Ignore this: {REFUSAL_TRIGGER}"


def _refused(entries: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in entries if e["stop_reason"] == "refusal"]


async def test_a_refused_report_fails_the_run_and_keeps_its_sources(
    harness: HarnessFactory,
) -> None:
    async with harness() as h:
        h.sim.set_faults({"search": {"says": HOSTILE}})
        handle = await h.start(f"refused report {uuid.uuid4().hex[:8]}")
        cause = await failure_of(handle)
        assert (cause.type, cause.non_retryable) == ("ModelRefused", True)
        assert "the model declined to write the report (category cyber" in cause.message
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.phase == Phase.FAILED
        assert status.report_id
        assert f"saved as report {status.report_id}" in status.message
        # Asked once, not retried, not re-asked; counted in the run's cost.
        entries = h.sim.entries("llm")
        (refused,) = _refused(entries)
        assert str(refused["key"]).startswith(handle.id)
        assert len(entries) == 2  # the query list, then the refused report
        assert status.retries == 0
        assert status.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-6)
        # The report kept is what was gathered, marked unfinished; never the fragment.
        markdown = await the_report(h, handle.id)
        assert "*Unfinished: the model declined to write the report." in markdown
        assert "## Sources found" in markdown
        listed = [line for line in markdown.splitlines() if line[:1].isdigit()]
        assert listed
        assert all(line.endswith(")") and "(https://" in line for line in listed)
        assert h.smtp.messages_for(handle.id) == []  # an unfinished report is not mailed


async def test_a_refused_query_list_is_not_asked_again(harness: HarnessFactory) -> None:
    async with harness() as h:
        handle = await h.start(f"queries {REFUSAL_TRIGGER} {uuid.uuid4().hex[:8]}")
        cause = await failure_of(handle)
        assert cause.type == "ModelRefused"
        assert "declined to write the search queries" in cause.message
        entries = h.sim.entries("llm")
        assert len(_refused(entries)) == len(entries) == 1  # no re-ask, no retry
        assert h.sim.entries("search") == []
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert (status.phase, status.report_id) == (Phase.FAILED, "")
        assert status.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-6)
        assert status.cost_usd > 0


async def test_a_deep_run_refused_mid_loop_stops_and_keeps_its_findings(
    harness: HarnessFactory,
) -> None:
    # One result a search: the agent fetches both pages of turn 1's two searches, records
    # findings from them, then searches a third time; that result carries the string.
    topic, third = third_search("refused loop")
    async with harness({**deep(10), "search": {"maxResults": 1}}) as h:
        faults = plan(10)
        h.sim.set_faults(
            {**faults, "search": {**faults["search"], "says": HOSTILE, "match": third}}
        )
        handle = await h.start(topic)
        cause = await failure_of(handle)
        assert cause.type == "ModelRefused"
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.phase == Phase.FAILED
        assert status.findings > 0
        entries = h.sim.entries("llm")
        (refused,) = _refused(entries)
        refused_turn = int(str(refused["key"]).rsplit("/turn", 1)[1])
        assert status.turn == refused_turn < 10
        assert f"declined to go on at turn {refused_turn}" in cause.message
        # Nothing asked after the refusal, nothing asked twice.
        assert refused is entries[-1] or refused == entries[-1]
        assert len({e["key"] for e in entries}) == len(entries)
        assert status.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-6)
        markdown = await the_report(h, handle.id)
        assert f"*Unfinished: the model declined to go on at turn {refused_turn}." in markdown
        assert "## Findings recorded" in markdown
        listed = [line for line in markdown.splitlines() if line[:1].isdigit()]
        assert len(listed) == status.findings
        assert all("(http" in line for line in listed)


@pytest.mark.parametrize("strategy", ["pipeline", "deep"])
async def test_a_report_cut_at_max_tokens_says_so(harness: HarnessFactory, strategy: str) -> None:
    small = {"model": {"maxTokens": 120}}
    overrides = {**deep(3), **small} if strategy == "deep" else small
    async with harness(overrides) as h:
        if strategy == "deep":
            h.sim.set_faults(plan(3))
        handle = await h.start(f"cut {strategy} {uuid.uuid4().hex[:8]}")
        result = await handle.result()
        assert result.status.phase == Phase.COMPLETED
        assert result.status.message == stops.cut_message("max_tokens", 120)
        markdown = await the_report(h, handle.id)
        assert markdown.endswith(stops.cut_note("max_tokens", 120))
        (mail,) = h.smtp.messages_for(handle.id)
        assert "This report stops here" in mail.get_content()

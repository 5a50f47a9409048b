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
from typing import Any

import anthropic
import pytest
from tests.integration.conftest import Harness, HarnessFactory
from tests.integration.test_deep_agent import billed_usd, deep, plan, the_report
from tests.support.histories import third_search
from tests.support.temporal import failure_of, scheduled_inputs

from steadfast_contract import stops
from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_dev.sim.messages import REFUSAL_TRIGGER
from steadfast_worker import transcript

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
        model = h.config.model.name
        assert h.metric("steadfast_llm_refusals_total", model=model) == 1
        assert h.metric("steadfast_llm_retry_cost_usd_total", model=model) == pytest.approx(
            billed_usd(h, [refused]), rel=1e-6
        )
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
        assert refused == entries[-1]
        assert len({e["key"] for e in entries}) == len(entries)
        assert h.metric("steadfast_llm_refusals_total", model=h.config.model.name) == 1
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
        assert "cut short: the model reached model.maxTokens (120 tokens)" in result.status.message
        markdown = await the_report(h, handle.id)
        assert markdown.endswith(stops.cut_note("max_tokens", 120))
        last = markdown.rstrip().splitlines()[-1]
        assert last.startswith("*This report stops here: the model reached model.maxTokens (120")
        (mail,) = h.smtp.messages_for(handle.id)
        assert "This report stops here" in mail.get_content()


async def _max_tokens_cutting_the_first_call(h: Harness, topic: str) -> int:
    """The smallest ``max_tokens`` at which turn 1's reply (as the worker asks it) is cut
    off inside its first call, found by asking the simulator, whose log is then cleared."""
    client = anthropic.AsyncAnthropic(
        base_url=h.sim.llm_base_url, api_key="test-key", max_retries=0
    )
    ask: dict[str, Any] = {
        "model": h.config.model.name,
        "system": transcript.SYSTEM,
        "tools": list(transcript.TOOLS),
        "messages": transcript.messages(topic, [], 1),
    }
    for max_tokens in range(8, 80):
        reply = await client.messages.create(max_tokens=max_tokens, **ask)
        calls = [b for b in reply.content if b.type == "tool_use"]
        if reply.stop_reason == "max_tokens" and len(calls) == 1 and calls[0].input == {}:
            h.sim.reset()
            return max_tokens
    raise AssertionError("no max_tokens cuts turn 1 inside its first call")


async def test_a_tool_call_cut_off_at_max_tokens_is_answered_not_retried(
    harness: HarnessFactory,
) -> None:
    """The real API stops inside a call's input JSON at max_tokens. The worker parsed
    that JSON whole, failed the turn, and asked (and paid) again on every attempt; now
    the call is answered with an error saying why, and the loop goes on."""
    topic = f"cut call {uuid.uuid4().hex[:8]}"
    async with harness(deep(3)) as h:
        max_tokens = await _max_tokens_cutting_the_first_call(h, topic)
    async with harness({**deep(3), "model": {"maxTokens": max_tokens}}) as h:
        h.sim.set_faults(plan(3))
        handle = await h.start(topic)
        result = await handle.result()
        assert result.status.phase == Phase.COMPLETED
        assert result.status.retries == 0
        served = h.sim.served()
        assert sorted(served.values()) == [1, 1, 1]  # turns 1 to 3, each asked once
        cut = [e for e in h.sim.entries("llm") if e["stop_reason"] == "max_tokens"]
        assert len(cut) == 3  # every turn ran out, the last one writing the report
        history = await handle.fetch_history()
        answers = [a for inp in scheduled_inputs(history, "deep_turn") for a in inp["answers"]]
        told = [a for a in answers if "cut off at model.maxTokens" in a["text"]]
        assert told
        assert all(a["is_error"] for a in told)
        assert (await the_report(h, handle.id)).endswith(stops.cut_note("max_tokens", max_tokens))


async def test_a_query_list_cut_at_max_tokens_is_not_asked_again(harness: HarnessFactory) -> None:
    """A re-ask has no more room than the first ask: it used to be paid for and cut again
    until the re-asks ran out."""
    async with harness({"model": {"maxTokens": 10}}) as h:
        handle = await h.start(f"tiny {uuid.uuid4().hex[:8]}")
        cause = await failure_of(handle)
        assert cause.type == "Misconfigured"
        assert "cut off at model.maxTokens (10 tokens): raise model.maxTokens" in cause.message
        entries = h.sim.entries("llm")
        assert [e["stop_reason"] for e in entries] == ["max_tokens"]
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-6)

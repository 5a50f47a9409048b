"""A prompt in Chinese is reserved at its tokens, not at a quarter of them.

The budget reserves each call's worst case before it is sent: ``maxTokens`` of output
and an estimate of the input. The estimate counted four characters a token, which
holds for English; a character of Chinese is about a token of its own. A run whose
search results came back in Chinese reserved a quarter of its report prompt, the call
fitted the run's budget on paper (its input priced at the dearest rate covers an
estimate half the truth, not a quarter), and the bill overran ``maxUSDPerRun``. The
simulator now counts tokens as the real API roughly does (a token a character outside
ASCII), and the budget estimates so too (``budget.token_chars``).

Every figure checked comes from the simulator's billing, never from the run's own
accounting.
"""

from __future__ import annotations

import pytest
from tests.integration.conftest import HarnessFactory
from tests.integration.test_budget_keeps_gathered import kept
from tests.integration.test_budget_per_call import _entries, billed_usd
from tests.support.temporal import failure_of

from steadfast_contract import errortypes
from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

#: A search result's title and snippet in Chinese: a client keeps 300 and 1,000 of
#: these characters, about 1,300 tokens a result, 19,500 for the 15 results a run reads.
CHINESE = "\u8a9e" * 1_000
#: Room for the query call (about $0.001) and for the report's reservation at four
#: characters a token ($0.056: its input priced at the dearest rate, a one-hour cache
#: write at twice the base price, which covers an estimate half the truth but not a
#: quarter); not for the report at a token a character ($0.107 billed, $0.21 reserved).
LIMIT_USD = 0.07
SMALL_REPLIES = {"maxTokens": 200}


async def test_a_report_prompt_in_chinese_that_the_budget_cannot_pay_is_never_sent(
    harness: HarnessFactory,
) -> None:
    budget = {"maxUSDPerRun": LIMIT_USD, "pauseTimeout": "0s"}
    async with harness({"model": SMALL_REPLIES, "budget": budget}) as h:
        h.sim.set_faults({"search": {"answer": CHINESE, "match": ""}})
        handle = await h.start("a report prompt in Chinese")
        cause = await failure_of(handle)
        assert cause.type == errortypes.BUDGET_EXHAUSTED, cause
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.phase == Phase.BUDGET_EXHAUSTED
        entries = _entries(h, handle.id)
        # The queries were asked; the report, which the budget could not pay, never was.
        assert status.llm_calls == 1
        assert len([e for e in entries if e["billed"]]) == 1
        assert billed_usd(h, entries) <= LIMIT_USD
        store = await h.store()
        try:
            saved = await store.list_reports(handle.id)
        finally:
            await store.close()
        report, _ = kept(saved, status, "Sources found")
        assert "the run's budget ran out before the report" in report.markdown


async def test_the_same_report_prompt_costs_more_than_that_budget(
    harness: HarnessFactory,
) -> None:
    """The premise of the test above: with room, the run writes the report, and the
    report's call alone is billed more than the budget that stopped it there."""
    async with harness({"model": SMALL_REPLIES, "budget": {"maxUSDPerRun": 1.0}}) as h:
        h.sim.set_faults({"search": {"answer": CHINESE, "match": ""}})
        handle = await h.start("a report prompt in Chinese, with room")
        result = await handle.result()
        assert result.status.phase == Phase.COMPLETED, result.status.message
        entries = _entries(h, handle.id)
        billed = [e for e in entries if e["billed"]]
        assert len(billed) == 2  # the queries, the report
        assert billed_usd(h, billed[1:]) > LIMIT_USD
        assert result.status.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-6)


async def test_a_report_in_chinese_cut_mid_stream_is_counted_at_what_it_was_billed(
    harness: HarnessFactory,
) -> None:
    """A stream that breaks was billed for the output it sent; the run counts that as
    failed spend from the text it received. Counted at four characters a token, a
    Chinese report cut at 90 % was counted at a quarter of its bill, so the run's spend
    (which its budget checks) fell short of what it was charged."""
    fault = {"first_n": 1, "kind": "stream_error", "stream_cut": 0.9}
    async with harness({"model": {"maxTokens": 2000}}) as h:
        h.sim.set_faults({"llm": {**fault, "answer": CHINESE, "match": "research report"}})
        handle = await h.start("a Chinese report cut mid-stream")
        result = await handle.result()
        assert result.status.phase == Phase.COMPLETED, result.status.message
        entries = _entries(h, handle.id)
        assert [e["fault"] for e in entries if e["fault"]] == ["stream_error"]
        assert result.status.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-6)

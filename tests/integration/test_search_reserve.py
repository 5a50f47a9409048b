"""A search through the model reserves the results the API bills as its input.

With ``search.provider: anthropic-web-search`` every search is a paid request, and
the real API bills the results the model reads as input tokens of that request:
thousands of tokens for five pages, on top of the $0.01 fee. A run reserved only
the fee, the prompt and ``maxTokens`` of output, and its searches run at once, so
with a small ``maxTokens`` three searches each cost about twice what they reserved
and the run went past ``maxUSDPerRun`` by more than one call. The simulator bills
the results the same way (``search_result_tokens``); every figure here is its
billing, never the workflow's accounting.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from tests.integration.conftest import HarnessFactory
from tests.integration.test_deep_agent import billed_usd

from steadfast_contract import budget, pricing
from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_worker.pipeline import QUERY_PROMPT_CHARS

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

#: What the simulator bills one search's results as: within the worker's allowance,
#: and about what five pages of text come to.
RESULT_TOKENS = 15_000
MAX_TOKENS = 1024


def _overrides(max_usd_per_run: float) -> dict[str, Any]:
    return {
        "search": {"provider": "anthropic-web-search"},
        "model": {"maxTokens": MAX_TOKENS},
        "budget": {"maxUSDPerRun": max_usd_per_run, "pauseTimeout": "0s"},
    }


def _mine(entries: list[dict[str, Any]], wf_id: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["key"].startswith(wf_id)]


def _searched(entry: dict[str, Any]) -> bool:
    return "server_tool_use" in (entry["billed"] or {})


async def test_searches_that_read_long_results_stop_the_run_within_its_budget(
    harness: HarnessFactory,
) -> None:
    # Room for the query call and for three searches as they were reserved before
    # (fee, prompt, output), not for three searches as they are billed.
    limit = 0.09
    async with harness(_overrides(limit)) as h:
        h.sim.set_faults({"llm": {"search_result_tokens": RESULT_TOKENS}})
        handle = await h.start("searches reading long results")
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        entries = _mine(h.sim.entries("llm"), handle.id)
        billed = billed_usd(h, entries)
        price = pricing.lookup(h.config.model.name)
        assert (price.input_per_mtok, price.output_per_mtok) == (3.0, 15.0)  # figured below
        calls = [billed_usd(h, [e]) for e in entries if e["billed"]]
        print(f"{len(calls)} calls billed ${billed:.4f} against ${limit}: {calls}")
        assert billed <= limit + max(calls)
        assert status.phase == Phase.BUDGET_EXHAUSTED, status.message
        # It stopped before the searches, which together would not have fit.
        assert [e for e in entries if _searched(e)] == []
        assert "would exceed the run budget" in status.message
        # What the three searches reserved covers what the simulator would bill them at
        # most: results and a 200-token prompt at $3/MTok, maxTokens at $15/MTok, the fee.
        reserved = float(re.findall(r"next call up to \$([0-9.]+)", status.message)[0])
        billed_at_most = ((RESULT_TOKENS + 200) * 3 + MAX_TOKENS * 15) / 1e6 + 0.01
        assert reserved >= 3 * billed_at_most


async def test_each_search_costs_no_more_than_it_reserved(harness: HarnessFactory) -> None:
    async with harness(_overrides(1.0)) as h:
        h.sim.set_faults({"llm": {"search_result_tokens": RESULT_TOKENS}})
        handle = await h.start("searches within their reserve")
        result = await handle.result()
        assert result.status.phase == Phase.COMPLETED, result.status.message
        entries = _mine(h.sim.entries("llm"), handle.id)
        searched = [e for e in entries if _searched(e)]
        assert len(searched) == 3
        price = pricing.lookup(h.config.model.name)
        reserve = budget.reserve_usd(
            MAX_TOKENS, budget.estimate_tokens(QUERY_PROMPT_CHARS), price, web_searches=1
        )
        for entry in searched:
            assert int(entry["billed"]["input_tokens"]) > RESULT_TOKENS
            assert billed_usd(h, [entry]) <= reserve
        assert result.status.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-6)

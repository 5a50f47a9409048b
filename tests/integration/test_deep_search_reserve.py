"""A turn's searches through the model are reserved at the size of their queries.

The searches of one turn run at once, and each activity checks its own request
alone against what the run had spent when the turn began, so the workflow must
afford them all first. It reserved each at a 100-token prompt, while the activity
reserves the query it sends: up to 2,000 characters, a token each in Chinese.
Eight such searches could then together pass the run's budget, each of them having
fit alone. The model here is a test activity standing in for ``deep_turn`` and
``deep_tool`` (the simulator's agent asks short queries, two at a time).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio import activity
from tests.integration.conftest import HarnessFactory
from tests.integration.test_deep_agent import deep
from tests.support.scripted import scripted_turn, worker_with
from tests.support.temporal import failure_of

from steadfast_contract import activities as act
from steadfast_contract import budget, errortypes, pricing
from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_worker import transcript
from steadfast_worker.deep import search_prompt_tokens

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

MODEL, MAX_TOKENS, SEARCHES = "claude-sonnet-4-6", 4000, 8
LONG_QUERY = "\u6f6e\u6c50\u80fd" * 660  # 1,980 characters of Chinese


def searches() -> list[act.ToolCall]:
    blocks = [
        {
            "type": "tool_use",
            "id": f"toolu_1_{i:020d}",
            "name": act.TOOL_WEB_SEARCH,
            "input": {"query": f"{i} {LONG_QUERY}"},
        }
        for i in range(SEARCHES)
    ]
    return transcript.tool_calls(blocks)  # the worker's own reading of a reply


TOOLS_RUN: list[str] = []


@activity.defn(name=act.DEEP_TURN)
async def searching_turn(inp: act.DeepTurnInput) -> act.DeepTurnOutput:
    return scripted_turn(inp, searches() if inp.turn == 1 else [])


@activity.defn(name=act.DEEP_TOOL)
async def counted_tool(inp: act.DeepToolInput) -> act.DeepToolOutput:
    TOOLS_RUN.append(inp.call.id)
    return act.DeepToolOutput(inp.call.id, summary="searched")


def per_search(prompt_tokens: int) -> float:
    price = pricing.lookup(MODEL)
    return budget.reserve_usd(
        MAX_TOKENS,
        prompt_tokens,
        price,
        web_searches=1,
        result_tokens=pricing.WEB_SEARCH_RESULT_TOKENS,
    )


async def test_a_turns_searches_are_reserved_at_the_size_of_their_queries(
    harness: HarnessFactory,
) -> None:
    sized = sum(per_search(search_prompt_tokens(c)) for c in searches())
    as_before = SEARCHES * per_search(100)
    assert sized > as_before + 0.02
    limit = round(as_before + 0.01, 4)  # the searches fit at 100 tokens, not at their size
    overrides = {
        **deep(5),
        "model": {"name": MODEL, "maxTokens": MAX_TOKENS},
        "search": {"provider": "anthropic-web-search"},
        "budget": {"maxUSDPerRun": limit, "pauseTimeout": "0s"},
    }
    async with harness(overrides, start_worker=False) as h:
        replaced = {h.activities.deep_turn: searching_turn, h.activities.deep_tool: counted_tool}
        TOOLS_RUN.clear()
        async with worker_with(h.client, h.task_queue, h.activities, replaced):
            handle = await h.start(f"long searches {uuid.uuid4().hex[:6]}")
            cause = await asyncio.wait_for(failure_of(handle), 60)
            status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert cause.type == errortypes.BUDGET_EXHAUSTED, cause
        assert status.phase == Phase.BUDGET_EXHAUSTED
        assert TOOLS_RUN == []  # none of the searches that could not all fit was sent

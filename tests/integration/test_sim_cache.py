"""Prompt caching of a tool-use conversation, against the simulator, as the real API caches.

The client loop places its breakpoints with the worker's ``caching.mark_breakpoints``
on the same dicts turn after turn (as a deep turn does) and talks to the simulator
through the real ``anthropic`` SDK; the simulator applies the real API's rules
(minimum cacheable length, 20-block lookback, 5-minute and 1-hour writes), and the
worker's ``llm.usage_of`` and the contract's ``pricing.cost_usd`` price the result.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, ToolUseBlock
from tests.support.sim import SimHandle

from steadfast_contract import pricing
from steadfast_worker import caching, llm

pytestmark = pytest.mark.integration

MODEL = "claude-sonnet-4-6"
#: Sonnet 4.6's minimum cacheable prompt length.
MIN_CACHEABLE = 1024
PROMPT = "Topic: tidal energy\nResearch it with the tools, record findings, then write a report."
#: Dollars per token at Sonnet 4.6's list prices, written out for the hand computation.
INPUT, OUTPUT, READ, WRITE_5M, WRITE_1H = 3e-6, 15e-6, 0.3e-6, 3.75e-6, 6e-6


def _tool(name: str, **properties: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {key: {"type": "string", "description": text}
                       for key, text in properties.items()},
        "required": list(properties),
    }  # fmt: skip
    return {"name": name, "description": f"The {name} tool.", "input_schema": schema}


def _tools() -> list[dict[str, Any]]:
    return [
        _tool("web_search", query="The search query."),
        _tool("fetch_page", url="An http(s) URL."),
        _tool("record_finding", claim="A claim.", source_url="Its source."),
    ]


def _system(words: int) -> list[dict[str, Any]]:
    rules = " ".join(f"rule{i}" for i in range(words))
    return [{"type": "text", "text": f"You are a careful researcher. House rules: {rules}."}]


@pytest.fixture
def sim(sim: SimHandle) -> SimHandle:
    """The session's simulator (reset), its search results linking to its own pages."""
    sim.set_faults({"search": {"page_links": True}})
    return sim


def _client(sim: SimHandle) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=sim.llm_base_url, api_key="test-key", max_retries=0, timeout=10.0
    )


@dataclass
class Conversation:
    system: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=_tools)
    messages: list[dict[str, Any]] = field(
        default_factory=lambda: [{"role": "user", "content": PROMPT}]
    )
    replies: list[Message] = field(default_factory=list)


async def _result(sim: SimHandle, http: httpx.AsyncClient, use: ToolUseBlock) -> dict[str, Any]:
    args: dict[str, Any] = dict(use.input)  # type: ignore[arg-type]
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": use.id}
    if use.name == "web_search":
        found = await http.post(sim.search_url, json={"query": str(args.get("query")), "count": 3})
        lines = [f"{r['title']}\n{r['url']}\n{r['snippet']}" for r in found.json()["results"]]
        return {**result, "content": "\n\n".join(lines)}
    if use.name == "fetch_page" and str(args.get("url", "")).startswith(sim.base_url):
        page = await http.get(str(args["url"]))
        return {**result, "content": [{"type": "text", "text": page.text[:4000]}]}
    return {**result, "content": "recorded"}


async def _play(sim: SimHandle, talk: Conversation, turns: int) -> Conversation:
    """The deep loop in miniature: mark, stream a turn, run its tools, repeat."""
    sim.set_faults({"llm": {"agent_turns": turns}})
    client = _client(sim)
    async with httpx.AsyncClient(timeout=10.0) as http:
        for n in range(1, turns + 1):
            marked = caching.mark_breakpoints(talk.system, talk.tools, talk.messages, MODEL)
            assert marked <= caching.MAX_BREAKPOINTS
            kwargs: Any = {"model": MODEL, "max_tokens": 4000, "system": talk.system,
                           "tools": talk.tools, "messages": talk.messages}  # fmt: skip
            headers = {"x-steadfast-request-key": f"cache/turn{n}"}
            async with client.messages.stream(**kwargs, extra_headers=headers) as events:
                reply = await events.get_final_message()
            talk.replies.append(reply)
            content = [b.model_dump(exclude_none=True) for b in reply.content]
            talk.messages.append({"role": "assistant", "content": content})
            uses = [b for b in reply.content if isinstance(b, ToolUseBlock)]
            if not uses:
                break
            results = await asyncio.gather(*(_result(sim, http, u) for u in uses))
            talk.messages.append({"role": "user", "content": list(results)})
    assert talk.replies[-1].stop_reason == "end_turn"
    return talk


def _prompt(usage: Any) -> int:
    return int(
        usage.input_tokens
        + (usage.cache_read_input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
    )


async def test_every_turn_reads_the_turn_before_once_the_prompt_passes_the_minimum(
    sim: SimHandle,
) -> None:
    # A short system prompt: the first turns are below Sonnet's minimum.
    talk = await _play(sim, Conversation(_system(20)), turns=8)
    usages = [r.usage for r in talk.replies]
    assert _prompt(usages[0]) < MIN_CACHEABLE
    below = [u for u in usages if _prompt(u) < MIN_CACHEABLE]
    assert below, "the test wants turns below the minimum"
    for usage in below:
        assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (0, 0)
        assert usage.cache_creation is not None
        assert usage.cache_creation.ephemeral_5m_input_tokens == 0
    reading = 0
    for n, (before, now) in enumerate(pairwise(usages), start=2):
        if _prompt(before) >= MIN_CACHEABLE:
            assert now.cache_read_input_tokens == _prompt(before), f"turn {n}"
            reading += 1
        else:
            assert now.cache_read_input_tokens == 0, f"turn {n}"
    assert reading >= 4


async def test_a_request_below_the_minimum_caches_nothing(sim: SimHandle) -> None:
    client = _client(sim)

    async def ask(model: str, tokens: int, question: str) -> Any:
        system: Any = [
            {"type": "text", "text": "abcd" * tokens, "cache_control": {"type": "ephemeral"}}
        ]
        user: Any = [{"role": "user", "content": question}]
        reply = await client.messages.create(
            model=model, max_tokens=200, system=system, messages=user
        )
        return reply.usage

    for model, short in (("claude-sonnet-4-6", 1000), ("claude-haiku-4-5", 3000)):
        for question in ("first", "again"):
            usage = await ask(model, short, question)
            assert usage.cache_creation_input_tokens == 0
            assert usage.cache_read_input_tokens == 0
            assert usage.input_tokens >= short
    # The same 3000 tokens pass Sonnet's minimum: written once, then read.
    cold = await ask("claude-sonnet-4-6", 3000, "first")
    warm = await ask("claude-sonnet-4-6", 3000, "again")
    assert (cold.cache_creation_input_tokens, warm.cache_read_input_tokens) == (3000, 3000)


async def test_the_cost_of_a_twenty_turn_run_is_its_usage_at_each_rate(sim: SimHandle) -> None:
    # A system prompt long enough that the stable head is cached for an hour.
    talk = await _play(sim, Conversation(_system(1000)), turns=20)
    assert len(talk.replies) == 20
    priced = sum(
        pricing.cost_usd(llm.usage_of(r.usage), pricing.lookup(MODEL)) for r in talk.replies
    )
    billed = [e["billed"] for e in sim.entries("llm")]
    assert len(billed) == 20
    by_hand = 0.0
    for usage in billed:
        hour = usage["cache_creation"]["ephemeral_1h_input_tokens"]
        five = usage["cache_creation"]["ephemeral_5m_input_tokens"]
        assert hour + five == usage["cache_creation_input_tokens"]
        by_hand += (
            usage["input_tokens"] * INPUT
            + usage["output_tokens"] * OUTPUT
            + usage["cache_read_input_tokens"] * READ
            + five * WRITE_5M
            + hour * WRITE_1H
        )
    assert priced == pytest.approx(by_hand, rel=1e-12)
    # Every rate took part: the head written for an hour once, the rest turn by turn.
    assert billed[0]["cache_creation"]["ephemeral_1h_input_tokens"] > 0
    assert all(u["cache_creation"]["ephemeral_1h_input_tokens"] == 0 for u in billed[1:])
    assert all(u["cache_read_input_tokens"] > 0 for u in billed[1:])
    assert all(u["cache_creation"]["ephemeral_5m_input_tokens"] > 0 for u in billed)
    # And caching paid: the same tokens uncached would have cost more than twice as much.
    uncached = sum(_prompt_raw(u) * INPUT + u["output_tokens"] * OUTPUT for u in billed)
    assert priced < uncached / 2


def _prompt_raw(usage: dict[str, Any]) -> int:
    return int(
        usage["input_tokens"]
        + usage["cache_read_input_tokens"]
        + usage["cache_creation_input_tokens"]
    )

"""Breakpoint placement for deep turns, checked against the simulator's cache rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from steadfast_dev.sim import promptcache
from steadfast_dev.sim.promptcache import PromptCache, account_input, cache_use
from steadfast_worker import transcript
from steadfast_worker.caching import MAX_BREAKPOINTS, mark_breakpoints

pytestmark = pytest.mark.unit

MODEL = "claude-sonnet-4-6"


def _tool(name: str, pad: int = 0) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    return {"name": name, "description": "Does it. " + "x" * pad, "input_schema": schema}


def _tools(pad: int = 0) -> list[dict[str, Any]]:
    return [_tool("web_search"), _tool("fetch_page"), _tool("record_finding", pad)]


def _system(chars: int) -> list[dict[str, Any]]:
    return [{"type": "text", "text": "You research with care. " + "s" * chars}]


def _turn(n: int, calls: int) -> list[dict[str, Any]]:
    """Turn n's assistant message (text and ``calls`` tool calls), then its results."""
    uses = [
        {"type": "tool_use", "id": f"t{n}_{i}", "name": "web_search", "input": {"q": f"{n}.{i}"}}
        for i in range(calls)
    ]
    results = [
        {"type": "tool_result", "tool_use_id": f"t{n}_{i}", "content": f"result {n}.{i} " * 40}
        for i in range(calls)
    ]
    return [
        {"role": "assistant", "content": [{"type": "text", "text": "Searching."}, *uses]},
        {"role": "user", "content": results},
    ]


def _marks(*parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "cache_control" in node:
                found.append(node["cache_control"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for part in parts:
        walk(part)
    return found


def _body(
    system: list[dict[str, Any]], tools: list[dict[str, Any]], messages: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 100, "system": system, "tools": tools,
            "messages": messages}  # fmt: skip


def test_tools_system_previous_and_newest_user_message() -> None:
    system, tools = _system(100), _tools()
    messages = [{"role": "user", "content": "Topic: tides"}, *_turn(1, 2)]
    assert mark_breakpoints(system, tools, messages) == MAX_BREAKPOINTS
    assert tools[-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert system[-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert messages[0]["content"] == [
        {"type": "text", "text": "Topic: tides", "cache_control": {"type": "ephemeral"}}
    ]
    assert messages[2]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert len(_marks(system, tools, messages)) == MAX_BREAKPOINTS


def test_marking_again_clears_the_marks_of_earlier_turns() -> None:
    system, tools = _system(100), _tools()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Topic: tides"}]
    for n in range(1, 6):
        marked = mark_breakpoints(system, tools, messages, MODEL)
        body = _body(system, tools, messages)
        assert len(_marks(system, tools, messages)) == marked <= MAX_BREAKPOINTS
        assert promptcache.validate_breakpoints(body) is None  # <= 4, the hour first
        messages += _turn(n, 3)  # the same dicts, still marked, carried into the next turn


def test_every_turn_reads_the_whole_prompt_of_the_turn_before() -> None:
    """Ten parallel calls a turn add 21 blocks, past the API's 20-block lookback."""
    system, tools = _system(5000), _tools()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Topic: tides"}]
    cache, before = PromptCache(), 0
    for n in range(1, 6):
        mark_breakpoints(system, tools, messages, MODEL)
        account = account_input(_body(system, tools, messages))
        use = cache_use(account, lambda d, now=float(n): cache.holds(d, now))
        assert use.read == before
        assert use.read + use.write == account.total_tokens
        for point in use.touched:
            cache.store(point.digest, point.ttl_s, float(n))
        before = account.total_tokens
        messages += _turn(n, 10)


def test_without_the_previous_message_mark_a_big_turn_misses() -> None:
    """What the previous-message breakpoint is for: the lookback alone does not reach."""
    system, tools = _system(5000), _tools()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Topic: tides"}]
    mark_breakpoints(system, tools, messages, MODEL)
    first = account_input(_body(system, tools, messages))
    cache = PromptCache()
    for point in cache_use(first, lambda _: False).touched:
        cache.store(point.digest, point.ttl_s, 0.0)
    messages += _turn(1, 10)
    mark_breakpoints(system, tools, messages, MODEL)
    messages[0]["content"][-1].pop("cache_control")
    use = cache_use(account_input(_body(system, tools, messages)), lambda d: cache.holds(d, 1.0))
    assert use.read < first.total_tokens  # only the head is read back


def test_a_head_below_the_minimum_is_not_marked_and_the_messages_cover_it() -> None:
    system, tools = _system(100), _tools()
    messages = [{"role": "user", "content": "Topic: tides " + "t" * 8000}]
    assert mark_breakpoints(system, tools, messages, MODEL) == 1
    assert _marks(system, tools) == []
    use = cache_use(account_input(_body(system, tools, messages)), lambda _: False)
    assert use.write > 1024  # tools, system and message, written at the message's mark


def test_the_hour_goes_to_the_first_part_of_the_head_that_reaches_the_minimum() -> None:
    short_tools, long_system = _tools(), _system(4000)
    assert mark_breakpoints(long_system, short_tools, [], MODEL) == 1
    assert long_system[-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    long_tools = _tools(pad=4000)
    system = _system(10)
    assert mark_breakpoints(system, long_tools, [], MODEL) == 2
    assert long_tools[-1]["cache_control"]["ttl"] == "1h"
    # A model with a higher minimum (Haiku 4.5: 4096) leaves the same head unmarked.
    assert mark_breakpoints(_system(10), _tools(pad=4000), [], "claude-haiku-4-5") == 0


def test_blocks_that_cannot_carry_a_breakpoint_are_skipped() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": ""}]},
        {"role": "user", "content": ""},
    ]
    assert mark_breakpoints([], [], messages) == 1
    assert messages[0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in messages[0]["content"][1]
    assert json.dumps(messages[1]) == '{"role": "user", "content": ""}'


def test_the_last_turn_reads_the_turn_before_and_writes_nothing() -> None:
    system, tools = _system(5000), _tools()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Topic: tides"}, *_turn(1, 3)]
    cache = PromptCache()
    mark_breakpoints(system, tools, messages, MODEL)
    account = account_input(_body(system, tools, messages))
    for point in cache_use(account, lambda d: cache.holds(d, 1.0)).touched:
        cache.store(point.digest, point.ttl_s, 1.0)
    before = account.total_tokens
    messages += _turn(2, 3)
    transcript.ask_for_the_report(messages)
    assert messages[-1]["content"][-1] == {"type": "text", "text": transcript.LAST_TURN_NOTE}
    mark_breakpoints(system, tools, messages, MODEL, last_turn=True)
    assert "cache_control" not in messages[-1]["content"][-1]  # no turn reads it
    use = cache_use(account_input(_body(system, tools, messages)), lambda d: cache.holds(d, 2.0))
    assert use.read == before
    assert use.write == 0


def test_a_request_that_cannot_read_the_turns_cache_marks_only_the_head() -> None:
    system, tools = _system(5000), _tools()
    messages = [{"role": "user", "content": "Topic: tides"}, *_turn(1, 3)]
    mark_breakpoints(system, tools, messages, MODEL)
    assert len(_marks(messages)) == 2
    marked = mark_breakpoints(system, tools, messages, MODEL, head_only=True)
    assert _marks(messages) == []
    assert marked == len(_marks(system, tools)) >= 1

"""The simulated tool-use agent, driven through the real ``anthropic`` SDK.

A small client loop plays the worker's part: it runs each tool the model calls
against the simulator's own search and pages (over real ``httpx``), answers with
``tool_result`` blocks, and sends the next turn, until the model ends its turn.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import httpx2
import pytest
from anthropic.types import Message, TextBlock, ToolUseBlock
from tests.support.sim import SimHandle

pytestmark = pytest.mark.integration

MODEL = "claude-sonnet-4-6"
TOPIC = "tidal energy"
PROMPT = f"Topic: {TOPIC}\nResearch it with the tools, record findings, then write a report."


def _tool(name: str, description: str, **properties: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": {key: {"type": "string", "description": text}
                           for key, text in properties.items()},
            "required": list(properties),
        },
    }  # fmt: skip


# Written out here, as a worker would define them, rather than taken from the simulator.
TOOLS: list[Any] = [
    _tool("web_search", "Search the web.", query="The search query."),
    _tool("fetch_page", "Fetch a web page.", url="An http(s) URL."),
    _tool("record_finding", "Record a finding.", claim="A claim.", source_url="Its source."),
]


@pytest.fixture
def sim(sim: SimHandle) -> SimHandle:
    """The session's simulator (reset), its search results linking to its own pages."""
    sim.set_faults({"search": {"page_links": True}})
    return sim


def _client(sim: SimHandle, timeout: float = 10.0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=sim.llm_base_url, api_key="test-key", max_retries=0, timeout=timeout
    )


@dataclass
class Run:
    """What the client loop saw and did."""

    replies: list[Message] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)
    searched: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    """URLs fetched successfully."""
    refused: list[str] = field(default_factory=list)
    findings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def report(self) -> str:
        return "".join(b.text for b in self.replies[-1].content if isinstance(b, TextBlock))


async def _execute(sim: SimHandle, http: httpx.AsyncClient, run: Run, use: ToolUseBlock) -> Any:
    """Run one tool call as a worker would: a ``tool_result`` block, an error when it fails."""
    args: dict[str, Any] = dict(use.input)  # type: ignore[arg-type]
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": use.id}
    if use.name == "web_search" and isinstance(args.get("query"), str):
        found = await http.post(sim.search_url, json={"query": args["query"], "count": 5})
        run.searched.append(args["query"])
        lines = [f"{r['title']}\n{r['url']}\n{r['snippet']}" for r in found.json()["results"]]
        return {**result, "content": "\n\n".join(lines)}
    if use.name == "fetch_page" and isinstance(args.get("url"), str):
        url = args["url"]
        if not url.startswith(sim.base_url):  # a worker's allow list: loopback only
            run.refused.append(url)
            return {**result, "content": "refused: not an allowed domain", "is_error": True}
        async with http.stream("GET", url) as page:
            kind = page.headers["content-type"]
            if page.status_code != 200 or not kind.startswith("text/"):
                run.refused.append(url)
                return {
                    **result,
                    "content": f"refused: {page.status_code} {kind}",
                    "is_error": True,
                }
            text = (await page.aread()).decode()
        run.fetched.append(url)
        return {**result, "content": [{"type": "text", "text": text}]}
    if use.name == "record_finding" and {"claim", "source_url"} <= set(args):
        run.findings.append((args["claim"], args["source_url"]))
        return {**result, "content": "recorded"}
    return {**result, "content": f"invalid input for {use.name}: {args}", "is_error": True}


async def _turn(
    client: anthropic.AsyncAnthropic, messages: list[Any], key: str, *, stream: bool, **extra: Any
) -> Message:
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 4000,
        "tools": TOOLS,
        "messages": messages,
        "extra_headers": {"x-steadfast-request-key": key},
        **extra,
    }
    if not stream:
        return await client.messages.create(**kwargs)
    async with client.messages.stream(**kwargs) as events:
        return await events.get_final_message()


async def play(
    sim: SimHandle, *, stream: bool = False, limit: int = 40, run_id: str = "run-1"
) -> Run:
    """The client loop: turns until the model stops calling tools (or ``limit`` turns)."""
    client = _client(sim)
    run = Run(messages=[{"role": "user", "content": PROMPT}])
    async with httpx.AsyncClient(timeout=10.0) as http:
        for turn in range(1, limit + 1):
            reply = await _turn(client, run.messages, f"{run_id}/turn{turn}", stream=stream)
            run.replies.append(reply)
            content = [block.model_dump(exclude_none=True) for block in reply.content]
            run.messages.append({"role": "assistant", "content": content})
            if reply.stop_reason != "tool_use":
                return run
            uses = [b for b in reply.content if isinstance(b, ToolUseBlock)]
            results = await asyncio.gather(*(_execute(sim, http, run, u) for u in uses))
            run.messages.append({"role": "user", "content": list(results)})
    return run


def _uses(reply: Message) -> list[ToolUseBlock]:
    return [b for b in reply.content if isinstance(b, ToolUseBlock)]


async def test_a_twenty_turn_run_ends_with_a_report_citing_the_pages_it_read(
    sim: SimHandle,
) -> None:
    sim.set_faults({"llm": {"agent_turns": 20}})
    run = await play(sim)
    assert len(run.replies) == 20
    assert [r.stop_reason for r in run.replies] == ["tool_use"] * 19 + ["end_turn"]
    calls = [use for reply in run.replies for use in _uses(reply)]
    assert len({use.id for use in calls}) == len(calls)
    assert all(use.id.startswith("toolu_") for use in calls)
    assert {use.name for use in calls} == {"web_search", "fetch_page", "record_finding"}
    assert max(len(_uses(r)) for r in run.replies) >= 2
    # Every page it read is cited, and every page is on the simulator (loopback).
    assert len(run.fetched) >= 10
    assert run.refused == []
    for url in run.fetched:
        assert url.startswith(f"{sim.base_url}/pages/")
        assert url in run.report
    for claim, url in run.findings:
        assert claim in run.report
        assert url in run.fetched
    # Each turn was served exactly once, and billed what the client was told.
    served = sim.served()
    assert served == {f"run-1/turn{n}": 1 for n in range(1, 21)}
    entries = sim.entries("llm")
    for reply, entry in zip(run.replies, entries, strict=True):
        assert entry["billed"]["input_tokens"] == reply.usage.input_tokens
        assert entry["billed"]["output_tokens"] == reply.usage.output_tokens
    # The whole conversation is input, so input grows turn after turn.
    inputs = [r.usage.input_tokens for r in run.replies]
    assert inputs == sorted(inputs)
    assert len(set(inputs)) == 20
    assert set(sim.served("pages").values()) == {1}
    assert len(sim.served("search")) == len(run.searched)


async def test_streamed_turns_parse_into_the_same_tool_calls_as_whole_ones(
    sim: SimHandle,
) -> None:
    whole = await play(sim, run_id="whole")
    streamed = await play(sim, stream=True, run_id="streamed")
    assert len(whole.replies) == len(streamed.replies) == 6
    for a, b in zip(whole.replies, streamed.replies, strict=True):
        assert [x.model_dump() for x in a.content] == [x.model_dump() for x in b.content]
        assert a.stop_reason == b.stop_reason
        assert a.usage.output_tokens == b.usage.output_tokens
    first = streamed.replies[0]
    assert isinstance(first.content[0], TextBlock)
    assert [u.name for u in _uses(first)] == ["web_search", "web_search"]
    assert all(TOPIC in str(u.input["query"]) for u in _uses(first))  # type: ignore[index]


async def test_raw_stream_of_a_tool_turn_has_the_real_event_order(sim: SimHandle) -> None:
    client = _client(sim)
    events = await client.messages.create(
        model=MODEL, max_tokens=1000, tools=TOOLS, stream=True,
        messages=[{"role": "user", "content": PROMPT}],
    )  # fmt: skip
    seen = [event async for event in events]
    starts = [e for e in seen if e.type == "content_block_start"]
    assert [s.content_block.type for s in starts] == ["text", "tool_use", "tool_use"]
    for start in starts[1:]:
        assert start.content_block.input == {}  # type: ignore[union-attr]
        pieces = [
            e.delta.partial_json  # type: ignore[union-attr]
            for e in seen
            if e.type == "content_block_delta" and e.index == start.index
        ]
        assert pieces[0] == ""
        assert json.loads("".join(pieces))["query"].startswith(TOPIC)
    assert [e.type for e in seen[-3:]] == ["content_block_stop", "message_delta", "message_stop"]
    assert seen[-2].delta.stop_reason == "tool_use"  # type: ignore[union-attr]


async def test_parallel_calls_can_be_turned_off(sim: SimHandle) -> None:
    reply = await _turn(
        _client(sim), [{"role": "user", "content": PROMPT}], "one", stream=False,
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )  # fmt: skip
    assert [u.name for u in _uses(reply)] == ["web_search"]


async def test_tool_choice_none_writes_the_report_at_once(sim: SimHandle) -> None:
    run = await play(sim, limit=3)
    reply = await _turn(
        _client(sim), run.messages, "final", stream=False, tool_choice={"type": "none"}
    )
    assert reply.stop_reason == "end_turn"
    assert _uses(reply) == []
    text = reply.content[0].text  # type: ignore[union-attr]
    assert "# tidal energy: research report" in text
    assert run.fetched
    assert all(url in text for url in run.fetched)


async def test_a_tool_use_without_its_result_is_refused_like_the_real_api(
    sim: SimHandle,
) -> None:
    client = _client(sim)
    run = await play(sim, limit=1)
    uses = _uses(run.replies[0])
    only_one = [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "nothing"}]
    asked = run.messages[:2]
    with pytest.raises(anthropic.BadRequestError) as caught:
        await _turn(client, [*asked, {"role": "user", "content": only_one}], "k", stream=False)
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages.1: `tool_use` ids were found without")
    assert uses[1].id in error["message"]
    stranger = [*only_one, {"type": "tool_result", "tool_use_id": "toolu_01x", "content": ""}]
    stranger[0] = {**stranger[0], "tool_use_id": uses[1].id}
    with pytest.raises(anthropic.BadRequestError, match="unexpected `tool_use_id`"):
        await _turn(client, [*asked, {"role": "user", "content": stranger}], "k", stream=False)
    answered = [{"type": "tool_result", "tool_use_id": u.id, "content": "ok"} for u in uses]
    without_tools = [*asked, {"role": "user", "content": answered}]
    with pytest.raises(anthropic.BadRequestError, match="must define tools"):
        await client.messages.create(model=MODEL, max_tokens=100, messages=without_tools)
    assert [e["outcome"] for e in sim.entries("llm")][1:] == ["rejected"] * 3


async def test_a_429_on_every_turn_is_retried_and_each_turn_served_once(sim: SimHandle) -> None:
    sim.set_faults({"llm": {"first_n": 1, "kind": "429", "retry_after": 0, "agent_turns": 4}})
    retrying = anthropic.AsyncAnthropic(base_url=sim.llm_base_url, api_key="k", max_retries=2)
    run = Run(messages=[{"role": "user", "content": PROMPT}])
    async with httpx.AsyncClient(timeout=10.0) as http:
        for turn in range(1, 5):
            reply = await _turn(retrying, run.messages, f"r/turn{turn}", stream=True)
            run.replies.append(reply)
            run.messages.append(
                {"role": "assistant", "content": [b.model_dump() for b in reply.content]}
            )
            results = [await _execute(sim, http, run, u) for u in _uses(reply)]
            if results:
                run.messages.append({"role": "user", "content": results})
    assert run.replies[-1].stop_reason == "end_turn"
    assert sim.attempts() == {f"r/turn{n}": 2 for n in range(1, 5)}
    assert sim.served() == {f"r/turn{n}": 1 for n in range(1, 5)}


async def _second_turn(sim: SimHandle) -> list[Any]:
    """The messages of turn 2, whose answer fetches pages."""
    run = await play(sim, limit=1)
    return run.messages


@pytest.mark.parametrize("stream", [False, True])
async def test_bad_json_on_a_tool_turn_sends_inputs_that_break_the_schema(
    sim: SimHandle, stream: bool
) -> None:
    messages = await _second_turn(sim)
    sim.set_faults({"llm": {"first_n": 1, "kind": "bad_json"}})
    client = _client(sim)
    broken = await _turn(client, messages, "turn2", stream=stream)
    fixed = await _turn(client, messages, "turn2", stream=stream)
    assert broken.stop_reason == fixed.stop_reason == "tool_use"
    assert [u.name for u in _uses(broken)] == [u.name for u in _uses(fixed)]
    for bad, good in zip(_uses(broken), _uses(fixed), strict=True):
        assert set(bad.input) == {"input"}  # type: ignore[arg-type]
        assert "url" in good.input  # type: ignore[operator]
        assert bad.id == good.id


async def test_a_stream_cut_inside_a_tool_call_bills_what_was_sent(sim: SimHandle) -> None:
    messages = await _second_turn(sim)
    sim.set_faults({"llm": {"first_n": 1, "kind": "stream_error", "stream_cut": 0.8}})
    client = _client(sim)
    with pytest.raises(anthropic.APIStatusError) as caught:
        await _turn(client, messages, "turn2", stream=True)
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    whole = await _turn(client, messages, "turn2", stream=True)
    cut, served = sim.entries("llm")[-2:]
    assert (cut["outcome"], served["outcome"]) == ("fault", "served")
    assert 0 < cut["billed"]["output_tokens"] < whole.usage.output_tokens
    assert cut["billed"]["input_tokens"] == whole.usage.input_tokens
    assert sim.served()["turn2"] == 1


async def test_a_dropped_connection_on_a_tool_turn(sim: SimHandle) -> None:
    messages = await _second_turn(sim)
    sim.set_faults({"llm": {"first_n": 2, "kind": "disconnect"}})
    client = _client(sim)
    with pytest.raises(httpx2.TransportError):
        await _turn(client, messages, "turn2", stream=True)
    with pytest.raises(anthropic.APIConnectionError):
        await _turn(client, messages, "turn2", stream=False)
    reply = await _turn(client, messages, "turn2", stream=False)
    assert _uses(reply)
    assert sim.served()["turn2"] == 1


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("500", anthropic.InternalServerError),
        ("529", anthropic.OverloadedError),
        ("400", anthropic.BadRequestError),
        ("401", anthropic.AuthenticationError),
    ],
)
async def test_status_faults_on_a_tool_turn(
    sim: SimHandle, kind: str, error: type[anthropic.APIStatusError]
) -> None:
    messages = await _second_turn(sim)
    sim.set_faults({"llm": {"first_n": 1, "kind": kind}})
    client = _client(sim)
    with pytest.raises(error):
        await _turn(client, messages, "turn2", stream=True)
    reply = await _turn(client, messages, "turn2", stream=True)
    assert [u.name for u in _uses(reply)] == ["fetch_page"]
    assert [e["status"] for e in sim.entries("llm")][-2:] == [int(kind), 200]
    assert sim.entries("llm")[-2]["billed"] is None


@pytest.mark.parametrize("kind", ["hang", "timeout"])
async def test_a_stalled_tool_turn_times_the_client_out(sim: SimHandle, kind: str) -> None:
    messages = await _second_turn(sim)
    sim.set_faults({"llm": {"first_n": 1, "kind": kind, "timeout_s": 30}})
    with pytest.raises(anthropic.APITimeoutError):
        await _turn(_client(sim, timeout=0.5), messages, "turn2", stream=True)
    assert "turn2" not in sim.served()


async def test_a_worker_leaving_mid_turn_is_not_served_and_its_retry_is(sim: SimHandle) -> None:
    messages = await _second_turn(sim)
    sim.set_faults({"llm": {"chunk_delay_ms": 30}})
    client = _client(sim)
    kwargs: Any = {"model": MODEL, "max_tokens": 2000, "tools": TOOLS, "messages": messages}
    headers = {"x-steadfast-request-key": "turn2"}
    async with client.messages.stream(**kwargs, extra_headers=headers) as events:
        async for event in events:
            if event.type == "content_block_delta":
                break  # the worker dies after the first delta
    for _ in range(100):
        if sim.entries("llm")[-1]["outcome"] == "aborted":
            break
        await asyncio.sleep(0.05)
    assert sim.entries("llm")[-1]["outcome"] == "aborted"
    reply = await _turn(client, messages, "turn2", stream=True)
    assert _uses(reply)
    assert sim.served()["turn2"] == 1
    assert sim.attempts()["turn2"] == 2


def _with_breakpoints(messages: list[Any]) -> list[Any]:
    """The messages with a cache breakpoint on the last block of the two newest user messages."""
    marked = json.loads(json.dumps(messages))
    users = [m for m in marked if m["role"] == "user"][-2:]
    for message in users:
        if isinstance(message["content"], str):
            message["content"] = [{"type": "text", "text": message["content"]}]
        message["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return marked


async def test_each_turn_reads_the_whole_prompt_of_the_turn_before_from_the_cache(
    sim: SimHandle,
) -> None:
    client = _client(sim)
    tools = [*TOOLS[:-1], {**TOOLS[-1], "cache_control": {"type": "ephemeral"}}]
    run = Run(messages=[{"role": "user", "content": PROMPT}])
    async with httpx.AsyncClient(timeout=10.0) as http:
        for _ in range(6):
            reply = await client.messages.create(
                model=MODEL, max_tokens=4000, tools=tools, messages=_with_breakpoints(run.messages)
            )
            run.replies.append(reply)
            said = [b.model_dump(exclude_none=True) for b in reply.content]
            run.messages.append({"role": "assistant", "content": said})
            results = [await _execute(sim, http, run, use) for use in _uses(reply)]
            if results:
                run.messages.append({"role": "user", "content": results})
    assert run.replies[-1].stop_reason == "end_turn"
    first = run.replies[0].usage
    # The first prompt (the tool-use system prompt and a little more) is below
    # Sonnet's minimum cacheable length (1024 tokens): the real API caches none of it.
    assert _prompt(first) < MIN_CACHEABLE
    assert (first.cache_read_input_tokens, first.cache_creation_input_tokens) == (0, 0)
    reads = 0
    for before, now in zip(run.replies, run.replies[1:], strict=False):
        prompt = _prompt(before.usage)
        assert now.usage.cache_read_input_tokens == (prompt if prompt >= MIN_CACHEABLE else 0)
        assert (now.usage.cache_creation_input_tokens or 0) > 0
        reads += prompt >= MIN_CACHEABLE
    assert reads >= 3


#: Sonnet 4.6's minimum cacheable prompt length (the simulator follows the real API).
MIN_CACHEABLE = 1024


def _prompt(usage: Any) -> int:
    return int(
        usage.input_tokens
        + (usage.cache_read_input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
    )

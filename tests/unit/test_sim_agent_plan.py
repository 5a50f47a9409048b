"""The simulated tool-use agent's plan, validation and wire shapes, without a server."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from steadfast_dev.sim import agent, messages, tooluse
from steadfast_dev.sim.faults import ServicePlan, plan_to_json, update_plan

pytestmark = pytest.mark.unit

PROMPT = "Topic: tidal energy\nResearch it, then write a report."


def _tool(name: str, *required: str) -> dict[str, Any]:
    properties = {key: {"type": "string"} for key in required}
    return {"name": name, "description": name, "input_schema": {
        "type": "object", "properties": properties, "required": list(required)}}  # fmt: skip


TOOLS = [
    _tool("web_search", "query"),
    _tool("fetch_page", "url"),
    _tool("record_finding", "claim", "source_url"),
]
SEARCH_RESULT = (
    "Tidal - Overview\nhttps://a.example.com/tidal/1\nsnippet\n\n"
    "Tidal - Report\nhttps://b.example.org/tidal/2\nsnippet"
)
PAGE = (
    "<html><h1>Title</h1><p>Tidal lagoons in Wales produce steady power for many homes. More.</p>"
)


def _body(messages_: list[Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 4000, "tools": TOOLS, "messages": messages_, **extra}


def _reply(body: dict[str, Any], turns: int = 6, broken: bool = False) -> messages.Reply:
    assert messages.validate_request(body) is None
    return agent.agent_reply(body, messages.CacheUse(), turns=turns, broken=broken)


def _use(tool_id: str, name: str, **args: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": args}


def _result(tool_id: str, text: str, *, error: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id, "content": text}
    return {**block, "is_error": True} if error else block


def _calls(reply: messages.Reply) -> list[tuple[object, object]]:
    return [(b["name"], b["input"]) for b in reply.tool_uses]


# A conversation after a search (turn 1) and one page fetched (turn 2).
SEARCHED = [
    {"role": "user", "content": PROMPT},
    {"role": "assistant", "content": [_use("toolu_s", "web_search", query="tidal")]},
    {"role": "user", "content": [_result("toolu_s", SEARCH_RESULT)]},
]
FETCHED = [
    *SEARCHED,
    {"role": "assistant", "content": [_use("toolu_f", "fetch_page", url="https://a.example.com/tidal/1")]},
    {"role": "user", "content": [_result("toolu_f", PAGE)]},
]  # fmt: skip


def test_turn_one_searches_twice_in_parallel_after_saying_so() -> None:
    reply = _reply(_body([{"role": "user", "content": PROMPT}]))
    assert reply.stop_reason == "tool_use"
    assert reply.text == "Searching for sources on tidal energy."
    names = [name for name, _ in _calls(reply)]
    assert names == ["web_search", "web_search"]
    queries = [args["query"] for _, args in _calls(reply)]  # type: ignore[index]
    assert len(set(queries)) == 2
    assert all(q.startswith("tidal energy") for q in queries)
    ids = [b["id"] for b in reply.tool_uses]
    assert all(re.fullmatch(r"toolu_01[0-9A-Za-z]{22}", str(i)) for i in ids)
    assert len(set(ids)) == 2


def test_the_same_turn_gets_the_same_answer() -> None:
    body = _body(FETCHED)
    assert _reply(body) == _reply(json.loads(json.dumps(body)))


def test_later_turns_fetch_what_the_searches_found_then_record_it() -> None:
    second = _reply(_body(SEARCHED))
    assert _calls(second) == [("fetch_page", {"url": "https://a.example.com/tidal/1"})]
    third = _reply(_body(FETCHED))
    assert _calls(third) == [
        ("record_finding", {
            "claim": "Tidal lagoons in Wales produce steady power for many homes.",
            "source_url": "https://a.example.com/tidal/1",
        }),
        ("fetch_page", {"url": "https://b.example.org/tidal/2"}),
    ]  # fmt: skip
    assert third.text.startswith("Noting what the pages read so far support.")


def test_a_refused_page_is_neither_recorded_nor_cited() -> None:
    refused = [
        *FETCHED[:-1],
        {"role": "user", "content": [_result("toolu_f", "too large", error=True)]},
    ]
    reply = _reply(_body(refused))
    assert [name for name, _ in _calls(reply)] == ["fetch_page"]
    final = _reply(_body(refused, tool_choice={"type": "none"}))
    assert final.stop_reason == "end_turn"
    assert "https://a.example.com/tidal/1" not in final.text
    # With no page read, the report falls back to citing the search results.
    only_search = _reply(_body(SEARCHED, tool_choice={"type": "none"}))
    assert "https://b.example.org/tidal/2" in only_search.text


def test_when_the_found_pages_are_all_read_it_searches_again() -> None:
    both = [
        *SEARCHED,
        {"role": "assistant", "content": [
            _use("toolu_a", "fetch_page", url="https://a.example.com/tidal/1"),
            _use("toolu_b", "fetch_page", url="https://b.example.org/tidal/2")]},
        {"role": "user", "content": [_result("toolu_a", PAGE), _result("toolu_b", PAGE)]},
    ]  # fmt: skip
    reply = _reply(_body(both))
    assert [name for name, _ in _calls(reply)] == ["record_finding", "record_finding", "web_search"]
    assert reply.tool_uses[2]["input"] != {"query": "tidal"}


def test_the_last_turn_writes_a_report_citing_the_pages_and_findings() -> None:
    recorded = [
        *FETCHED,
        {"role": "assistant", "content": [_use("toolu_r", "record_finding",
                                                claim="Lagoons are steady.",
                                                source_url="https://a.example.com/tidal/1")]},
        {"role": "user", "content": [_result("toolu_r", "recorded")]},
    ]  # fmt: skip
    reply = _reply(_body(recorded), turns=4)
    assert reply.stop_reason == "end_turn"
    assert reply.tool_uses == ()
    assert reply.text.startswith("# tidal energy: research report")
    assert "1. https://a.example.com/tidal/1" in reply.text
    assert "- Lagoons are steady. [1]" in reply.text
    assert "b.example.org" not in reply.text  # found, never read


def test_only_the_offered_tools_are_called() -> None:
    no_search = {**_body([{"role": "user", "content": PROMPT}]), "tools": TOOLS[1:]}
    assert _reply(no_search).stop_reason == "end_turn"  # nothing to fetch, nothing to search
    fetch_only = {**_body(SEARCHED), "tools": TOOLS[1:2]}
    assert [n for n, _ in _calls(_reply(fetch_only))] == ["fetch_page"]


def test_disabling_parallel_calls_keeps_the_first() -> None:
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    reply = _reply(_body([{"role": "user", "content": PROMPT}], tool_choice=choice))
    assert [n for n, _ in _calls(reply)] == ["web_search"]


def test_max_tokens_cuts_the_call_it_stops_in() -> None:
    # The text (10 tokens) and the first call (16) fit; the second stops after 5 of 16.
    body = _body([{"role": "user", "content": PROMPT}], max_tokens=35)
    reply = _reply(body)
    assert reply.stop_reason == "max_tokens"
    whole, cut = reply.tool_uses
    assert whole["input"]  # the first call fits whole
    assert cut["input"] == {}
    written = json.dumps(_reply(_body([{"role": "user", "content": PROMPT}])).tool_uses[1]["input"])
    assert reply.cut_json
    assert written.startswith(reply.cut_json)
    assert len(reply.cut_json) < len(written)
    assert reply.usage["output_tokens"] == 35
    streamed = "".join(
        str(data["delta"]["partial_json"])  # type: ignore[index]
        for name, data in messages.sse_events(reply, "msg", "m")
        if name == "content_block_delta" and data["index"] == 2  # text, then two calls
    )
    assert streamed == reply.cut_json


def test_max_tokens_leaves_out_a_call_whose_name_does_not_fit() -> None:
    reply = _reply(_body([{"role": "user", "content": PROMPT}], max_tokens=30))
    assert reply.stop_reason == "max_tokens"
    assert len(reply.tool_uses) == 1
    assert reply.cut_json is None


def test_bad_json_sends_inputs_that_break_the_schema() -> None:
    reply = _reply(_body(SEARCHED), broken=True)
    (block,) = reply.tool_uses
    assert block["name"] == "fetch_page"
    assert set(block["input"]) == {"input"}  # type: ignore[arg-type]
    assert str(block["input"]["input"]).startswith('{"url": "https://a')  # type: ignore[index]


def test_usage_counts_the_tool_system_prompt_tools_and_the_calls() -> None:
    plain = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x" * 40}]}
    with_tools = {**plain, "tools": [_tool("fetch_page", "url")]}
    tool_tokens = (len(json.dumps(with_tools["tools"][0], sort_keys=True)) + 3) // 4
    grew = (
        messages.account_input(with_tools).total_tokens - messages.account_input(plain).total_tokens
    )
    assert grew == 346 + tool_tokens
    server_only = {**plain, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    assert not agent.plays_agent(server_only)
    reply = _reply(_body(SEARCHED))
    # "Reading 1 of the sources found." is 31 characters: 8 tokens; the call
    # "fetch_page" + '{"url": "https://a.example.com/tidal/1"}' is 50: 13, + 1.
    assert reply.usage["output_tokens"] == 8 + 14


def test_the_wire_shapes_put_tool_calls_after_the_text() -> None:
    reply = _reply(_body(SEARCHED))
    body = messages.message_json(reply, "msg_1", "m")
    assert [b["type"] for b in body["content"]] == ["text", "tool_use"]  # type: ignore[attr-defined]
    assert body["stop_reason"] == "tool_use"
    events = messages.sse_events(reply, "msg_1", "m")
    start = next(d for e, d in events if e == "content_block_start" and d["index"] == 1)
    assert start["content_block"] == {**reply.tool_uses[0], "input": {}}
    pieces = [
        d["delta"]["partial_json"]  # type: ignore[index]
        for e, d in events
        if e == "content_block_delta" and d["index"] == 1
    ]
    assert pieces[0] == ""
    assert len(pieces) > 2
    assert json.loads("".join(pieces)) == {"url": "https://a.example.com/tidal/1"}
    ending = next(d for e, d in events if e == "message_delta")
    assert ending["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        (
            [*SEARCHED[:2], {"role": "user", "content": "no results"}],
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately "
            "after: toolu_s. Each `tool_use` block must have a corresponding `tool_result` "
            "block in the next message.",
        ),
        (
            [*SEARCHED[:2], {"role": "user", "content": [_result("toolu_x", "")]}],
            "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
            "toolu_x. Each `tool_result` block must have a corresponding `tool_use` block in "
            "the previous message.",
        ),
        (
            [*SEARCHED, {"role": "assistant", "content": "done"},
             {"role": "user", "content": [_result("toolu_s", "again")]}],
            "messages.4.content.0: unexpected `tool_use_id`",
        ),
    ],
)  # fmt: skip
def test_broken_pairings_get_the_real_apis_400(conversation: list[Any], message: str) -> None:
    problem = messages.validate_request(_body(conversation))
    assert problem is not None
    assert problem.startswith(message)


def test_tool_blocks_need_tools_and_tools_need_a_schema() -> None:
    no_tools = {k: v for k, v in _body(SEARCHED).items() if k != "tools"}
    assert messages.validate_request(no_tools) == (
        "Requests which include `tool_use` or `tool_result` blocks must define tools."
    )
    schemaless = _body(SEARCHED[:1], tools=[{"name": "fetch_page"}])
    assert messages.validate_request(schemaless) == "tools.0.custom.input_schema: Field required"
    badly_named = _body(SEARCHED[:1], tools=[{**TOOLS[0], "name": "web search"}])
    assert "tools.0.custom.name" in str(messages.validate_request(badly_named))
    twice = _body(SEARCHED[:1], tools=[TOOLS[0], TOOLS[0]])
    assert messages.validate_request(twice) == "tools: Tool names must be unique."


def test_the_turn_is_the_number_of_assistant_messages_plus_one() -> None:
    assert tooluse.read_conversation(_body(SEARCHED[:1])).turn == 1
    conversation = tooluse.read_conversation(_body(FETCHED))
    assert conversation.turn == 3
    assert [(c.turn, c.name, c.is_error) for c in conversation.calls] == [
        (1, "web_search", False),
        (2, "fetch_page", False),
    ]
    assert conversation.result_urls() == [
        "https://a.example.com/tidal/1",
        "https://b.example.org/tidal/2",
    ]


def test_agent_settings_in_the_plans_json_form() -> None:
    plan = update_plan(ServicePlan(), {"agent_turns": 20, "page_links": True}, "llm")
    assert (plan.agent_turns, plan.page_links) == (20, True)
    assert plan_to_json(plan)["agent_turns"] == 20
    assert ServicePlan().agent_turns == 6
    cleared = update_plan(update_plan(plan, {"first_n": 1}, "llm"), {"clear": True}, "llm")
    assert (cleared.agent_turns, cleared.page_links, cleared.sequence) == (20, True, ())
    typed = update_plan(ServicePlan(), {"content_type": "image/png"}, "pages")
    assert typed.content_type == "image/png"
    for bad, field in (
        ({"agent_turns": 0}, "llm.agent_turns"),
        ({"agent_turns": 2.5}, "llm.agent_turns"),
        ({"agent_turns": 501}, "llm.agent_turns"),
        ({"page_links": "yes"}, "llm.page_links"),
    ):
        with pytest.raises(ValueError, match=re.escape(field)):
            update_plan(ServicePlan(), bad, "llm")


def test_a_claim_is_a_whole_sentence_of_the_page_never_its_title() -> None:
    text = (
        "Tidal Power\nTidal Power\nShort.\n"
        "Barrages on the Rance estuary have run since 1966 without a pause. Next"
    )
    assert agent.claim(text, "tidal") == (
        "Barrages on the Rance estuary have run since 1966 without a pause."
    )
    assert agent.claim("<h1>Tidal</h1><p>Too short.</p>", "tidal") == "The source discusses tidal."


def _asking(conversation: list[Any], note: str) -> list[Any]:
    newest = conversation[-1]
    content = [*newest["content"], {"type": "text", "text": note}]
    return [*conversation[:-1], {**newest, "content": content}]


def test_a_note_saying_it_is_the_last_turn_gets_the_report_with_tools_offered() -> None:
    note = "This is your last turn: no tool call will run after it. Write the report now."
    reply = _reply(_body(_asking(FETCHED, note)), turns=20)
    assert (reply.stop_reason, reply.tool_uses) == ("end_turn", ())
    assert "1. https://a.example.com/tidal/1" in reply.text
    # Only the newest user message asks: the note on an earlier turn does not.
    earlier = [*_asking(SEARCHED, note), *FETCHED[3:]]
    assert _reply(_body(earlier), turns=20).stop_reason == "tool_use"
    # A model that does not heed it calls tools regardless.
    deaf = agent.agent_reply(
        _body(_asking(FETCHED, note)), messages.CacheUse(), turns=20, broken=False,
        finishes_when_asked=False,
    )  # fmt: skip
    assert deaf.stop_reason == "tool_use"


def test_whether_the_agent_heeds_the_note_is_a_plan_setting_kept_on_clear() -> None:
    plan = update_plan(ServicePlan(), {"agent_finishes_when_asked": False}, "llm")
    assert plan_to_json(plan)["agent_finishes_when_asked"] is False
    assert update_plan(plan, {"clear": True}, "llm").agent_finishes_when_asked is False
    with pytest.raises(ValueError, match="agent_finishes_when_asked: expected true or false"):
        update_plan(plan, {"agent_finishes_when_asked": "no"}, "llm")

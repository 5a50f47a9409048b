"""The deep loop's pure parts: tool calls checked, the conversation rebuilt, when to continue
and what a continue-as-new carries."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from temporalio.contrib.workflow_streams import WorkflowStreamState
from temporalio.contrib.workflow_streams._types import _WorkflowStreamWireItem
from temporalio.converter import DataConverter

from steadfast_contract import stops
from steadfast_contract.activities import ToolCall
from steadfast_contract.models import Finding, ToolAnswer
from steadfast_contract.pricing import Usage
from steadfast_worker import deep, transcript

pytestmark = pytest.mark.unit


def _reply(*blocks: dict[str, Any]) -> str:
    return transcript.StoredReply(list(blocks), "tool_use", {"input_tokens": 5}, 0.01).dumps()


def _use(call_id: str, name: str, **inp: object) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": inp}


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (_use("a", "web_search", query="q"), ToolCall("a", "web_search", {"query": "q"})),
        (
            _use("b", "record_finding", claim="c", source_url="u", extra="x"),
            ToolCall("b", "record_finding", {"claim": "c", "source_url": "u"}),
        ),
        (
            _use("c", "fetch_page"),
            ToolCall(
                "c",
                "fetch_page",
                problem="invalid input for fetch_page: url must be non-empty strings",
            ),
        ),
        (
            _use("d", "fetch_page", url=["http://x"]),
            ToolCall(
                "d",
                "fetch_page",
                problem="invalid input for fetch_page: url must be non-empty strings",
            ),
        ),
        (
            {"type": "tool_use", "id": "e", "name": "fetch_page", "input": '{"url": "ht'},
            ToolCall(
                "e",
                "fetch_page",
                problem="invalid input for fetch_page: url must be non-empty strings",
            ),
        ),
        (_use("f", "rm_rf", path="/"), ToolCall("f", "rm_rf", problem="there is no tool 'rm_rf'")),
    ],
)
def test_tool_calls_are_checked_against_their_schema(
    block: dict[str, Any], expected: ToolCall
) -> None:
    assert transcript.tool_calls([{"type": "text", "text": "let me look"}, block]) == [expected]


def test_a_tool_input_is_cut_to_a_bounded_length() -> None:
    (call,) = transcript.tool_calls([_use("a", "web_search", query="q" * 10_000)])
    assert len(call.input["query"]) == transcript.MAX_INPUT_CHARS


def test_one_turns_tool_calls_carry_a_bounded_number_of_bytes() -> None:
    """200 findings of 2,000 characters that escape to 6 bytes each would be 4.8 MB in
    the turn's output, more than a payload may be: the calls past the bound are
    answered, not run, and every call keeps its id for its answer."""
    blocks = [
        _use(f"t{i}", "record_finding", claim="\u8a9e" * 5000, source_url="https://a.example/")
        for i in range(200)
    ]
    calls = transcript.tool_calls(blocks)
    assert [c.id for c in calls] == [f"t{i}" for i in range(200)]
    kept = [c for c in calls if not c.problem]
    carried = sum(stops.payload_bytes(v) for c in kept for v in c.input.values())
    assert 0 < carried <= transcript.MAX_TURN_INPUT_BYTES
    # A claim cut to 2,000 characters of 6 bytes, and an 18-character URL, each quoted.
    per_call = (2000 * 6 + 2) + (18 + 2)
    assert len(kept) == transcript.MAX_TURN_INPUT_BYTES // per_call
    refused = calls[len(kept) :]
    assert refused
    assert all("make fewer or shorter calls" in c.problem for c in refused)
    assert all(c.input == {} for c in refused)


def test_a_tool_input_and_a_replys_text_hold_no_nul_nor_lone_surrogate() -> None:
    """What no store, URL or request body can carry is replaced (steadfast_contract.text)."""
    (call,) = transcript.tool_calls([_use("a", "web_search", query="tides\x00 \ud800")])
    assert call.input["query"] == "tides\ufffd \ufffd"
    reply = [{"type": "text", "text": "# Report\x00"}, {"type": "text", "text": " \udc00"}]
    assert transcript.reply_text(reply) == "# Report\ufffd \ufffd"


def test_a_stored_reply_can_be_sent_back_whatever_the_model_wrote() -> None:
    """JSON may spell a lone surrogate or a NUL, which no request body carries, and a
    call's input may nest past what the parser reads back: kept as every later turn
    can send them, and the deep call is not run."""
    deep_input: Any = {"claim": "x"}
    for _ in range(transcript.MAX_INPUT_DEPTH + 1):
        deep_input = {"a": [deep_input]}
    blocks = [
        {"type": "text", "text": "said \ud800 and \x00"},
        {"type": "tool_use", "id": "t1", "name": "web_search", "input": {"query": "q\udfff"}},
        {"type": "tool_use", "id": "t2", "name": "record_finding", "input": deep_input},
    ]
    kept = [transcript.sendable(b) for b in blocks]
    assert kept[0]["text"] == "said \ufffd and \ufffd"
    assert kept[1]["input"] == {"query": "q\ufffd"}
    assert kept[2]["input"] == {}
    json.dumps(kept).encode()  # no surrogate left to refuse
    body = json.dumps(kept, ensure_ascii=False).encode("utf-8")
    assert json.loads(body) == kept
    (call,) = [c for c in transcript.tool_calls(kept) if c.id == "t2"]
    assert call.problem
    # Shallow inputs are kept as the model wrote them.
    assert transcript.sendable(blocks[1] | {"input": {"query": "q"}}) == blocks[1] | {
        "input": {"query": "q"}
    }


def test_the_conversation_is_rebuilt_with_each_result_after_its_call_in_call_order() -> None:
    parts = [
        (
            1,
            "assistant",
            _reply(_use("s1", "web_search", query="a"), _use("s2", "web_search", query="b")),
        ),
        # Stored out of order, as parallel tools finish: the rebuild follows the reply.
        (1, "result:s2", transcript.result_body("results b", False)),
        (1, "result:s1", transcript.result_body("results a", False)),
        (
            2,
            "assistant",
            _reply({"type": "text", "text": "noted"}, _use("f1", "fetch_page", url="u")),
        ),
        (2, "result:f1", transcript.result_body("refused: not text", True)),
    ]
    messages = transcript.messages("batteries", parts, 3)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"].endswith("Topic: batteries")
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "s1", "content": "results a", "is_error": False},
        {"type": "tool_result", "tool_use_id": "s2", "content": "results b", "is_error": False},
    ]
    assert messages[4]["content"][0]["is_error"] is True


def test_a_call_without_a_stored_result_is_answered_as_an_error() -> None:
    parts = [(1, "assistant", _reply(_use("s1", "web_search", query="a")))]
    (answer,) = transcript.messages("t", parts, 2)[2]["content"]
    assert answer["tool_use_id"] == "s1"
    assert answer["is_error"] is True


def test_a_missing_reply_is_an_error_not_a_shorter_conversation() -> None:
    with pytest.raises(LookupError, match="turn 1"):
        transcript.messages("t", [], 2)


def test_a_stored_reply_round_trips() -> None:
    reply = transcript.StoredReply(
        [{"type": "text", "text": "x"}], "end_turn", {"input_tokens": 3}, 0.5
    )
    assert transcript.StoredReply.loads(reply.dumps()) == reply
    assert "request" not in json.loads(reply.dumps())  # as stored before it named one
    paid = replace(reply, request="wf/run/3/1/0")
    assert transcript.StoredReply.loads(paid.dumps()) == paid
    assert json.loads(reply.dumps())["cost_usd"] == 0.5


def test_what_is_stored_names_the_request_that_paid_for_it() -> None:
    """An attempt after a lost one uses these and counts them itself, so it leaves them
    out of the lost attempt's spend."""
    reply = transcript.StoredReply([], "end_turn", {}, 0.25, "wf/run/3/1/0").dumps()
    aside = transcript.StoredReply([], "tool_use", {}, 0.5, "wf/run/3/1/1").dumps()
    paid = transcript.Paid("wf/run/4/2/0", 0.125, Usage(input_tokens=9, web_search_requests=1))
    searched = transcript.result_body("results", False, paid)
    assert transcript.paid_result(json.loads(searched)) == paid  # usage and all
    assert transcript.paid_result(json.loads(transcript.result_body("page", False))) is None
    old = transcript.StoredReply([], "end_turn", {}, 0.75).dumps()  # before it named one
    parts = [
        ("assistant", reply),
        ("set-aside", aside),
        ("result:s1", searched),
        ("result:f1", transcript.result_body("page", False)),
        ("assistant", old),
    ]
    assert transcript.paid_for(parts) == {
        "wf/run/3/1/0": 0.25,
        "wf/run/3/1/1": 0.5,
        "wf/run/4/2/0": 0.125,
    }
    # What paid for a result is not part of what the model is sent back.
    turn = [
        (1, "assistant", _reply(_use("s1", "web_search", query="a"))),
        (1, "result:s1", searched),
    ]
    (answer,) = transcript.messages("t", turn, 2)[2]["content"]
    assert answer == {
        "type": "tool_result",
        "tool_use_id": "s1",
        "content": "results",
        "is_error": False,
    }


@pytest.mark.parametrize(
    ("turns_here", "every", "suggested", "expected"),
    [
        (0, 5, True, False),  # never before this run's first turn
        (4, 5, False, False),
        (5, 5, False, True),
        (3, 0, False, False),  # 0: only when Temporal suggests it
        (3, 0, True, True),
        (1, 5, True, True),
    ],
)
def test_when_to_continue_as_new(
    turns_here: int, every: int, suggested: bool, expected: bool
) -> None:
    assert deep.continue_as_new_now(turns_here, every, suggested) is expected


def test_at_most_eight_io_calls_run_in_one_turn_and_the_rest_are_answered() -> None:
    """What one turn adds to the conversation stays bounded (steadfast_contract.context):
    the ninth fetch is answered with an error; findings, which do no I/O, are not counted."""
    blocks = [_use(f"f{i}", "fetch_page", url=f"https://e.test/{i}") for i in range(9)]
    blocks.insert(3, _use("r", "record_finding", claim="c", source_url="https://e.test/0"))
    calls = transcript.tool_calls(blocks)
    assert [c.id for c in calls if not c.problem] == [
        "f0",
        "f1",
        "f2",
        "r",
        *(f"f{i}" for i in range(3, 8)),
    ]
    (refused,) = [c for c in calls if c.problem]
    assert refused.id == "f8"
    assert "at most 8 web_search and fetch_page calls" in refused.problem


def _finding(i: int, claim: str, url: str) -> ToolCall:
    return ToolCall(f"f{i}", "record_finding", {"claim": claim, "source_url": url})


def record_all(findings: list[Finding], calls: list[ToolCall]) -> list[ToolAnswer]:
    """The answers to ``calls``, recorded in one turn as the workflow records them."""
    answers, kept_bytes = [], deep.findings_bytes(findings)
    for call in calls:
        answer, kept_bytes = deep.record_finding(findings, call, kept_bytes)
        assert kept_bytes == deep.findings_bytes(findings)  # the running total is exact
        answers.append(answer)
    return answers


def test_findings_are_kept_within_what_a_continue_as_new_can_carry() -> None:
    """Findings travel in the input of every run the loop continues as. 200 with
    2,000-character source URLs that escape to 6 bytes a character would be 2.5 MB,
    more than a payload may be: past the bound the model is told, and nothing is kept."""
    findings: list[Finding] = []
    url = "https://\u4f8b.example/" + "\u8def" * 1980
    answers = record_all(findings, [_finding(i, "a claim", url) for i in range(200)])
    assert deep.findings_bytes(findings) <= deep.MAX_FINDINGS_BYTES
    kept = len(findings)
    # "a claim" quoted; the URL: 17 ASCII characters, then 1,981 of 6 bytes, quoted.
    per_finding = (7 + 2) + (17 + 1981 * 6 + 2)
    assert kept == deep.MAX_FINDINGS_BYTES // per_finding
    assert [a.text for a in answers[:kept]] == [f"recorded finding {n}" for n in range(1, kept + 1)]
    assert all(a.is_error and "findings are full" in a.text for a in answers[kept:])


def test_findings_past_the_count_are_acknowledged_as_before() -> None:
    findings: list[Finding] = []
    calls = [_finding(i, "c" * 900, "https://a.example/") for i in range(deep.MAX_FINDINGS + 5)]
    answer = record_all(findings, calls)[-1]
    assert len(findings) == deep.MAX_FINDINGS
    assert all(len(f.claim) == deep.MAX_CLAIM_CHARS for f in findings)
    assert answer.text == f"recorded finding {deep.MAX_FINDINGS}"
    assert not answer.is_error


def _stream(sizes: list[int], base: int = 0) -> WorkflowStreamState:
    # The SDK's own item type for a stream's state (base64 data, one byte a character).
    return WorkflowStreamState(
        log=[_WorkflowStreamWireItem("report", "A" * n) for n in sizes], base_offset=base
    )


def test_a_continue_as_new_hands_on_the_newest_items_that_fit() -> None:
    # Each item: '{"data":"","offset":0,"topic":""},' (34) + "report" (6) + its data.
    state = _stream([100, 200, 300, 400], base=7)  # items 7..10; 140, 240, 340, 440 bytes
    kept = deep.carried_stream(state, handed=0, limit=340 + 440)
    assert [len(i.data) for i in kept.log] == [300, 400]
    assert kept.base_offset == 9  # the offsets of the items kept do not change
    kept = deep.carried_stream(state, handed=0, limit=340 + 440 - 1)
    assert ([len(i.data) for i in kept.log], kept.base_offset) == ([400], 10)
    # Items the run was handed are never handed on, whatever room is left.
    kept = deep.carried_stream(state, handed=3, limit=10**6)
    assert ([len(i.data) for i in kept.log], kept.base_offset) == ([400], 10)
    # One item larger than the bound: none is kept, and the offset moves past it.
    kept = deep.carried_stream(state, handed=0, limit=100)
    assert (kept.log, kept.base_offset) == ([], 11)


def test_the_bound_counts_at_least_what_the_converter_writes() -> None:
    state = _stream([5000] * 30)
    kept = deep.carried_stream(state, handed=0, limit=50_000)
    [payload] = DataConverter.default.payload_converter.to_payloads([kept])
    assert len(kept.log) == 50_000 // (34 + 6 + 5000)  # 9
    assert len(payload.data) <= 50_000 + 100  # the state's own few fields

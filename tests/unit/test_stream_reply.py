"""A streamed reply built from its raw events is the reply the SDK's helper builds.

:class:`~steadfast_worker.activities.streaming.Reply` replaces the SDK's
``messages.stream`` accumulation (for its cost); the SDK's own accumulator, run on
the same events, is the reference.
"""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from steadfast_worker.activities.streaming import Reply, started_usage

pytestmark = pytest.mark.unit

_EVENT = TypeAdapter(RawMessageStreamEvent)


def _start(input_tokens: int = 900, cache_read: int = 4096) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": 1,
                "cache_read_input_tokens": cache_read,
                "cache_creation_input_tokens": 0,
            },
        },
    }


def _text(index: int, *pieces: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "content_block_start",
            "index": index,
            "content_block": {"type": "text", "text": ""},
        },
        *(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": p},
            }
            for p in pieces
        ),
        {"type": "content_block_stop", "index": index},
    ]


def _tool(index: int, call_id: str, *pieces: str) -> list[dict[str, Any]]:
    block = {"type": "tool_use", "id": call_id, "name": "web_search", "input": {}}
    return [
        {"type": "content_block_start", "index": index, "content_block": block},
        *(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": p},
            }
            for p in pieces
        ),
        {"type": "content_block_stop", "index": index},
    ]


def _end(stop_reason: str, output_tokens: int, **usage: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens, **usage},
        },
        {"type": "message_stop"},
    ]


TOOL_TURN = [
    _start(),
    *_text(0, "Let me ", "search for that."),
    *_tool(1, "toolu_a", '{"que', 'ry": "grid batt', 'eries 2026"}'),
    *_tool(2, "toolu_b", ""),  # a tool called with no input
    *_end("tool_use", 87),
]
REPORT_TURN = [
    _start(input_tokens=12, cache_read=0),
    *_text(0, "# Report\n", "Storage grew ", "40%."),
    # message_delta's counts are cumulative totals and replace message_start's.
    *_end("end_turn", 310, input_tokens=15, cache_creation_input_tokens=2048),
]


REFUSED_TURN = [
    _start(input_tokens=40, cache_read=0),
    *_text(0, "Hello.."),
    {
        "type": "message_delta",
        "delta": {
            "stop_reason": "refusal",
            "stop_sequence": None,
            "stop_details": {
                "type": "refusal",
                "category": "cyber",
                "explanation": "This request was declined because it could enable cyber harm.",
            },
        },
        "usage": {"output_tokens": 3},
    },
    {"type": "message_stop"},
]


def _built(raw: list[dict[str, Any]]) -> tuple[Message, Message, list[tuple[str, int]]]:
    mine, pieces = Reply(), []
    reference: Any = None
    buffers: dict[int, bytes] = {}
    for data in raw:
        pieces.append(mine.take(_EVENT.validate_python(data)))
        reference = accumulate_event(
            event=_EVENT.validate_python(data), current_snapshot=reference, json_bufs=buffers
        )
    return mine.final(), reference, pieces


@pytest.mark.parametrize(
    "raw", [TOOL_TURN, REPORT_TURN, REFUSED_TURN], ids=["tool-turn", "report-turn", "refused"]
)
def test_the_reply_is_the_one_the_sdk_builds(raw: list[dict[str, Any]]) -> None:
    mine, reference, _ = _built(raw)
    assert [b.to_dict() for b in mine.content] == [b.to_dict() for b in reference.content]
    assert mine.usage.to_dict() == reference.usage.to_dict()
    assert (mine.stop_reason, mine.stop_sequence) == (
        reference.stop_reason,
        reference.stop_sequence,
    )
    assert mine.stop_details == reference.stop_details  # why a refusal was refused


def test_a_call_cut_off_by_max_tokens_has_no_input() -> None:
    """The API stops inside a call's JSON at max_tokens: the reply is whole, the call
    has no input (never run; the SDK's partial parse would give ``{}`` here too)."""
    cut = [
        _start(),
        *_text(0, "Searching."),
        *_tool(1, "toolu_a", '{"query": "grid"}'),
        *_tool(2, "toolu_b", '{"que', 'ry": "grid batt'),
        *_end("max_tokens", 30),
    ]
    mine, reference, _ = _built(cut)
    assert mine.stop_reason == "max_tokens"
    inputs = [getattr(b, "input", None) for b in mine.content]
    assert inputs == [None, {"query": "grid"}, {}]
    assert [getattr(b, "input", None) for b in reference.content] == inputs


def test_a_call_nested_past_the_parsers_limit_has_no_input() -> None:
    """A few thousand brackets (a page can ask the model for them) are not a crash of
    the reply: the call has no input, is not run, and the model is told so."""
    nested = [
        _start(),
        *_tool(0, "toolu_a", '{"query": ' + "[" * 3000, "]" * 3000 + "}"),
        *_end("tool_use", 800),
    ]
    mine = Reply()
    for data in nested:
        mine.take(_EVENT.validate_python(data))
    assert [getattr(b, "input", None) for b in mine.final().content] == [{}]


def test_a_refusal_says_why() -> None:
    mine, _, _ = _built(REFUSED_TURN)
    assert mine.stop_reason == "refusal"
    assert mine.stop_details is not None
    assert mine.stop_details.category == "cyber"


def test_each_event_says_what_it_streamed() -> None:
    _, _, pieces = _built(TOOL_TURN)
    assert "".join(text for text, _ in pieces) == "Let me search for that."
    assert sum(chars for _, chars in pieces) == len('{"query": "grid batteries 2026"}')


def test_a_tool_calls_input_is_parsed_once_whole() -> None:
    mine, _, _ = _built(TOOL_TURN)
    calls = [b for b in mine.content if b.type == "tool_use"]
    assert [(c.id, c.input) for c in calls] == [
        ("toolu_a", {"query": "grid batteries 2026"}),
        ("toolu_b", {}),
    ]


def test_the_input_is_known_from_message_start_on() -> None:
    reply = Reply()
    assert started_usage(reply) is None  # nothing billed before message_start
    reply.take(_EVENT.validate_python(_start(input_tokens=900, cache_read=4096)))
    started = started_usage(reply)
    assert started is not None
    assert (started.input_tokens, started.cache_read_tokens) == (900, 4096)


def test_a_stream_closed_before_message_stop_is_no_reply() -> None:
    reply = Reply()
    for data in TOOL_TURN[:-1]:
        reply.take(_EVENT.validate_python(data))
    with pytest.raises(RuntimeError, match="ended before its reply did"):
        reply.final()


def test_an_event_before_message_start_is_refused() -> None:
    with pytest.raises(RuntimeError, match="before message_start"):
        Reply().take(_EVENT.validate_python({"type": "message_stop"}))

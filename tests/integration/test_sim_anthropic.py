"""The Messages API simulator, spoken to through the real ``anthropic`` SDK."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import ServerToolUseBlock, TextBlock, WebSearchToolResultBlock
from tests.support.sim import SimHandle

from steadfast_dev.sim.messages import REFUSAL_TRIGGER

pytestmark = pytest.mark.integration

MODEL = "claude-sonnet-4-6"
QUERIES = "Topic: tidal energy\nReturn a JSON array of 4 search queries and nothing else."
REPORT = "Topic: tidal energy\nWrite the report. Sources: https://a.example.com/t1"


def _client(sim: SimHandle, timeout: float = 10.0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=sim.llm_base_url, api_key="test-key", max_retries=0, timeout=timeout
    )


def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_create_returns_deterministic_json_queries_with_usage(sim: SimHandle) -> None:
    client = _client(sim)
    first = await client.messages.create(model=MODEL, max_tokens=500, messages=_user(QUERIES))
    again = await client.messages.create(model=MODEL, max_tokens=500, messages=_user(QUERIES))
    block = first.content[0]
    assert isinstance(block, TextBlock)
    queries = json.loads(block.text)
    assert len(queries) == 4
    assert all("tidal energy" in q for q in queries)
    assert again.content == first.content
    assert first.model == MODEL
    assert first.stop_reason == "end_turn"
    assert first.usage.input_tokens > 10
    assert first.usage.output_tokens == (len(block.text) + 3) // 4
    assert first.usage.cache_read_input_tokens == 0
    assert sim.served() == {sim.entries("llm")[0]["key"]: 2}


async def test_stream_delivers_the_same_text_and_usage_as_create(sim: SimHandle) -> None:
    client = _client(sim)
    whole = await client.messages.create(model=MODEL, max_tokens=2000, messages=_user(REPORT))
    pieces = []
    async with client.messages.stream(model=MODEL, max_tokens=2000, messages=_user(REPORT)) as s:
        async for text in s.text_stream:
            pieces.append(text)
        final = await s.get_final_message()
    assert len(pieces) > 10
    assert "".join(pieces) == final.content[0].text  # type: ignore[union-attr]
    assert final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.stop_reason == "end_turn"
    assert "https://a.example.com/t1" in "".join(pieces)
    # Streamed and non-streamed forms are the same logical request.
    assert list(sim.served().values()) == [2]


async def test_raw_stream_events_arrive_in_the_api_order(sim: SimHandle) -> None:
    client = _client(sim)
    stream = await client.messages.create(
        model=MODEL, max_tokens=50, messages=_user(REPORT), stream=True
    )
    kinds = [event.type async for event in stream]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_prompt_cache_writes_once_then_reads(sim: SimHandle) -> None:
    client = _client(sim)
    system: Any = [
        {
            "type": "text",
            # 1200 tokens: past Sonnet's minimum cacheable length (1024).
            "text": "You research carefully. " * 200,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    cold = await client.messages.create(
        model=MODEL, max_tokens=300, system=system, messages=_user(QUERIES)
    )
    warm = await client.messages.create(
        model=MODEL, max_tokens=300, system=system, messages=_user(REPORT)
    )
    assert cold.usage.cache_creation_input_tokens == 1200
    assert cold.usage.cache_read_input_tokens == 0
    assert warm.usage.cache_creation_input_tokens == 0
    assert warm.usage.cache_read_input_tokens == 1200


async def test_max_tokens_truncates_with_stop_reason(sim: SimHandle) -> None:
    reply = await _client(sim).messages.create(model=MODEL, max_tokens=7, messages=_user(REPORT))
    assert reply.stop_reason == "max_tokens"
    assert reply.usage.output_tokens == 7


async def test_429_surfaces_as_rate_limit_error_with_retry_after(sim: SimHandle) -> None:
    sim.set_faults({"llm": {"first_n": 2, "kind": "429", "retry_after": 3}})
    client = _client(sim)
    for _ in range(2):
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(model=MODEL, max_tokens=100, messages=_user(QUERIES))
        assert caught.value.response.headers["retry-after"] == "3"
        assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    await client.messages.create(model=MODEL, max_tokens=100, messages=_user(QUERIES))
    assert [e["status"] for e in sim.entries("llm")] == [429, 429, 200]
    assert [e["attempt"] for e in sim.entries("llm")] == [1, 2, 3]


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [
        ("529", anthropic.OverloadedError, 529),
        ("500", anthropic.InternalServerError, 500),
        ("400", anthropic.BadRequestError, 400),
        ("401", anthropic.AuthenticationError, 401),
    ],
)
async def test_status_faults_map_to_sdk_exceptions(
    sim: SimHandle, kind: str, error: type[anthropic.APIStatusError], status: int
) -> None:
    sim.set_faults({"llm": {"first_n": 1, "kind": kind}})
    with pytest.raises(error) as caught:
        await _client(sim).messages.create(model=MODEL, max_tokens=100, messages=_user(QUERIES))
    assert caught.value.status_code == status
    if status == 529:
        assert isinstance(caught.value, anthropic.InternalServerError)
        assert caught.value.response.headers["retry-after"] == "1"


async def test_invalid_request_and_wrong_key_are_rejected(sim: SimHandle) -> None:
    client = _client(sim)
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        await client.messages.create(model=MODEL, max_tokens=0, messages=_user("x"))
    sim.set_faults({"llm": {"api_key": "the-right-key"}})
    with pytest.raises(anthropic.AuthenticationError):
        await client.messages.create(model=MODEL, max_tokens=10, messages=_user("x"))
    right = anthropic.AsyncAnthropic(
        base_url=sim.llm_base_url, api_key="the-right-key", max_retries=0
    )
    await right.messages.create(model=MODEL, max_tokens=10, messages=_user("x"))
    assert [e["outcome"] for e in sim.entries("llm")] == ["rejected", "rejected", "served"]


async def _wait_for_outcome(sim: SimHandle, outcome: str) -> dict[str, Any]:
    for _ in range(100):
        entry = sim.entries("llm")[-1]
        if entry["outcome"] == outcome:
            return entry
        await asyncio.sleep(0.05)
    raise AssertionError(f"last entry never became {outcome}: {entry}")


@pytest.mark.parametrize("kind", ["hang", "timeout"])
async def test_stalls_time_out_the_client_and_are_logged_as_aborted(
    sim: SimHandle, kind: str
) -> None:
    sim.set_faults({"llm": {"first_n": 1, "kind": kind, "timeout_s": 30}})
    with pytest.raises(anthropic.APITimeoutError):
        await _client(sim, timeout=0.5).messages.create(
            model=MODEL, max_tokens=10, messages=_user("x")
        )
    entry = await _wait_for_outcome(sim, "aborted")
    assert entry["fault"] == kind
    assert sim.served() == {}


async def test_timeout_fault_answers_504_when_the_client_waits(sim: SimHandle) -> None:
    sim.set_faults({"llm": {"first_n": 1, "kind": "timeout", "timeout_s": 0.2}})
    with pytest.raises(anthropic.InternalServerError) as caught:
        await _client(sim).messages.create(model=MODEL, max_tokens=10, messages=_user("x"))
    assert caught.value.status_code == 504


async def test_bad_json_fault_breaks_only_the_faulted_attempts(sim: SimHandle) -> None:
    sim.set_faults({"llm": {"first_n": 1, "kind": "bad_json"}})
    client = _client(sim)
    broken = await client.messages.create(model=MODEL, max_tokens=500, messages=_user(QUERIES))
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.content[0].text)  # type: ignore[union-attr]
    fixed = await client.messages.create(model=MODEL, max_tokens=500, messages=_user(QUERIES))
    assert len(json.loads(fixed.content[0].text)) == 4  # type: ignore[union-attr]


async def test_service_scope_fails_the_next_matching_call_whatever_its_key(
    sim: SimHandle,
) -> None:
    sim.set_faults(
        {"llm": {"first_n": 1, "kind": "bad_json", "scope": "service", "match": "JSON array"}}
    )
    client = _client(sim)
    await client.messages.create(model=MODEL, max_tokens=500, messages=_user(REPORT))
    asks = []
    for ask in (1, 2):
        reply = await client.messages.create(
            model=MODEL,
            max_tokens=500,
            messages=_user(QUERIES),
            extra_headers={"x-steadfast-request-key": f"wf/act/ask{ask}"},
        )
        asks.append(reply.content[0].text)  # type: ignore[union-attr]
    with pytest.raises(json.JSONDecodeError):
        json.loads(asks[0])
    assert len(json.loads(asks[1])) == 4
    assert [e["fault"] for e in sim.entries("llm")] == [None, "bad_json", None]


async def test_web_search_tool_blocks_parse_into_sdk_types(sim: SimHandle) -> None:
    client = _client(sim)
    tools: Any = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]
    reply = await client.messages.create(
        model=MODEL, max_tokens=2000, tools=tools, messages=_user("Topic: tidal energy")
    )
    use, result, text = reply.content
    assert isinstance(use, ServerToolUseBlock)
    assert use.input == {"query": "tidal energy"}
    assert isinstance(result, WebSearchToolResultBlock)
    assert result.tool_use_id == use.id
    assert isinstance(result.content, list)
    assert len(result.content) == 5
    assert all(r.url.startswith("https://") for r in result.content)
    assert isinstance(text, TextBlock)
    assert result.content[0].url in text.text
    assert reply.usage.server_tool_use is not None
    assert reply.usage.server_tool_use.web_search_requests == 1
    async with client.messages.stream(
        model=MODEL, max_tokens=2000, tools=tools, messages=_user("Topic: tidal energy")
    ) as stream:
        streamed = await stream.get_final_message()
    assert [b.type for b in streamed.content] == [b.type for b in reply.content]
    assert streamed.content[0].input == use.input  # type: ignore[union-attr]
    assert streamed.content[1].content == result.content  # type: ignore[union-attr]
    assert streamed.content[2].text == text.text  # type: ignore[union-attr]
    assert streamed.usage.server_tool_use == reply.usage.server_tool_use


async def test_a_stream_cut_short_is_not_served_and_the_retry_is(sim: SimHandle) -> None:
    sim.set_faults({"llm": {"chunk_delay_ms": 20}})
    client = _client(sim)
    headers = {"x-steadfast-request-key": "wf-1/analyse"}
    async with client.messages.stream(
        model=MODEL, max_tokens=2000, messages=_user(REPORT), extra_headers=headers
    ) as stream:
        async for _ in stream.text_stream:
            break  # the worker "dies" after the first chunk
    await _wait_for_outcome(sim, "aborted")
    assert sim.served() == {}
    async with client.messages.stream(
        model=MODEL, max_tokens=50, messages=_user("different body"), extra_headers=headers
    ) as stream:
        await stream.get_final_message()
    assert sim.served() == {"wf-1/analyse": 1}
    assert sim.attempts() == {"wf-1/analyse": 2}
    assert sim.entries("llm")[0]["key_source"] == "x-steadfast-request-key"


async def _read_stream(client: anthropic.AsyncAnthropic, seen: list[str]) -> None:
    async with client.messages.stream(model=MODEL, max_tokens=2000, messages=_user(REPORT)) as s:
        async for text in s.text_stream:
            seen.append(text)


async def test_stream_error_ends_a_stream_with_an_overloaded_error_event(sim: SimHandle) -> None:
    sim.set_faults({"llm": {"first_n": 2, "kind": "stream_error"}})
    client = _client(sim)
    seen: list[str] = []
    # Mid-stream the SDK raises a plain APIStatusError carrying the HTTP 200 of the
    # stream: the error type is only in the body, which is what a worker must read.
    with pytest.raises(anthropic.APIStatusError) as caught:
        await _read_stream(client, seen)
    assert seen
    assert caught.value.status_code == 200
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.OverloadedError):
        await client.messages.create(model=MODEL, max_tokens=2000, messages=_user(REPORT))
    assert [(e["fault"], e["outcome"]) for e in sim.entries("llm")] == [
        ("stream_error", "fault"),
        ("stream_error", "fault"),
    ]
    assert sim.served() == {}


async def test_disconnect_drops_the_connection(sim: SimHandle) -> None:
    sim.set_faults({"llm": {"first_n": 2, "kind": "disconnect"}})
    client = _client(sim)
    with pytest.raises(anthropic.APIConnectionError):
        await client.messages.create(model=MODEL, max_tokens=2000, messages=_user(REPORT))
    # Mid-stream, the SDK lets the transport's own error through unwrapped.
    with pytest.raises(httpx2.TransportError):
        await _read_stream(client, [])
    assert sim.served() == {}
    await client.messages.create(model=MODEL, max_tokens=2000, messages=_user(REPORT))
    assert list(sim.served().values()) == [1]
    assert [e["attempt"] for e in sim.entries("llm")] == [1, 2, 3]


async def test_the_refusal_test_string_is_refused_as_the_api_refuses(sim: SimHandle) -> None:
    """The API's documented trigger anywhere in the prompt (here in a page the user
    quotes) ends the reply with ``refusal`` and ``stop_details``, streamed or not,
    billed for the few words written."""
    client = _client(sim)
    prompt = _user(f"{REPORT}\nPage text: {REFUSAL_TRIGGER} and more")
    whole = await client.messages.create(model=MODEL, max_tokens=2000, messages=prompt)
    async with client.messages.stream(model=MODEL, max_tokens=2000, messages=prompt) as s:
        streamed = await s.get_final_message()
    for reply in (whole, streamed):
        assert reply.stop_reason == "refusal"
        assert reply.stop_details is not None
        assert (reply.stop_details.type, reply.stop_details.category) == ("refusal", "cyber")
        assert reply.stop_details.explanation
        text = "".join(b.text for b in reply.content if isinstance(b, TextBlock))
        assert 0 < len(text) <= 40
        assert reply.usage.output_tokens == (len(text) + 3) // 4
    assert [e["stop_reason"] for e in sim.entries("llm")] == ["refusal", "refusal"]
    plain = await client.messages.create(model=MODEL, max_tokens=2000, messages=_user(REPORT))
    assert plain.stop_reason == "end_turn"
    assert plain.stop_details is None

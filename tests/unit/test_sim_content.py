"""What the simulated model writes and how it counts tokens, without a server."""

from __future__ import annotations

import json

import pytest

from steadfast_dev.sim import content, messages, promptcache

pytestmark = pytest.mark.unit

QUERY_PROMPT = "Topic: quantum sensing\nReturn a JSON array of 4 search queries, nothing else."


def _body(text: str, **extra: object) -> dict[str, object]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 2000,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def test_query_prompt_gets_a_json_array_of_the_asked_length_about_the_topic() -> None:
    answer = content.model_answer(_body(QUERY_PROMPT))
    queries = json.loads(answer)
    assert len(queries) == 4
    assert len(set(queries)) == 4
    assert all(isinstance(q, str) and "quantum sensing" in q for q in queries)


def test_query_count_defaults_and_caps() -> None:
    assert content.query_count("Return a JSON array of search queries") == 3
    assert content.query_count("give 7 distinct web queries") == 7
    assert content.query_count("give 500 queries") == content.MAX_QUERY_COUNT
    assert len(content.search_queries("x", 20)) == 20


def test_topic_falls_back_to_the_first_line_of_the_user_message() -> None:
    assert content.topic_of("no marker here", "  \nsolar storage prices\nmore") == (
        "solar storage prices"
    )
    assert content.topic_of("Topic: a\nTopic: b", "x") == "b"
    assert content.topic_of("Research topic: ocean heat\nmore", "x") == "ocean heat"


def test_same_request_same_answer_and_different_topics_differ() -> None:
    first = content.model_answer(_body(QUERY_PROMPT))
    assert content.model_answer(_body(QUERY_PROMPT)) == first
    assert content.model_answer(_body(QUERY_PROMPT.replace("quantum", "bio"))) != first


def test_bad_json_does_not_parse() -> None:
    broken = content.model_answer(_body(QUERY_PROMPT), broken_json=True)
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)


def test_report_is_markdown_on_the_topic_citing_the_prompt_urls() -> None:
    prompt = (
        "Topic: grid batteries\nWrite the report from these results:\n"
        "- https://a.example.com/one\n- https://b.example.org/two"
    )
    report = content.model_answer(_body(prompt))
    assert report.startswith("# grid batteries")
    assert "## Key findings" in report
    assert "https://a.example.com/one" in report
    assert "https://b.example.org/two" in report
    assert 150 < len(report.split()) < 1000


def test_search_results_are_deterministic_and_shaped() -> None:
    results = content.search_results("heat pumps", 5)
    assert results == content.search_results("heat pumps", 5)
    assert len(results) == 5
    assert all(set(r) == {"title", "url", "snippet"} for r in results)
    assert all(r["url"].startswith("https://") for r in results)
    assert len({r["url"] for r in results}) == 5


def test_truncate_honours_max_tokens_and_stop_sequences() -> None:
    text = "alpha beta gamma delta " * 10
    assert content.truncate(text, 1000) == (text, "end_turn", None)
    cut, reason, _ = content.truncate(text, 5)
    assert (len(cut), reason) == (20, "max_tokens")
    cut, reason, sequence = content.truncate(text, 1000, ["gamma", "beta"])
    assert (cut, reason, sequence) == ("alpha ", "stop_sequence", "beta")


def test_the_simulator_counts_a_character_outside_ascii_as_a_token() -> None:
    assert content.estimate_tokens("abcd" * 10) == 10
    assert content.estimate_tokens("\u8a9e" * 10) == 10
    assert content.estimate_tokens("\U0001f4da") == 2
    assert content.estimate_tokens("abc\u8a9e") == 2  # a part token rounds up


@pytest.mark.parametrize("text", ["\u8a9e" * 50, "ab\u8a9e" * 30, "\U0001f4da" * 20, "x" * 90])
def test_truncate_cuts_text_outside_ascii_at_max_tokens(text: str) -> None:
    cut, reason, _ = content.truncate(text, 7)
    assert reason == "max_tokens"
    assert text.startswith(cut)
    assert content.estimate_tokens(cut) <= 7 < content.estimate_tokens(text[: len(cut) + 1])


def test_input_tokens_grow_with_the_prompt() -> None:
    short = messages.account_input(_body("hi"))
    long = messages.account_input(_body("hi " * 400))
    assert short.total_tokens < long.total_tokens
    assert long.total_tokens == content.estimate_tokens("hi " * 400) + 3


def _cached_body(user: str) -> dict[str, object]:
    # 1100 tokens: past Sonnet's minimum cacheable length (1024).
    system = [{"type": "text", "text": "S" * 4400, "cache_control": {"type": "ephemeral"}}]
    return _body(user, system=system)


def test_first_sight_of_a_cached_prefix_writes_then_later_requests_read() -> None:
    account = messages.account_input(_cached_body("question one"))
    cold = promptcache.cache_use(account, lambda digest: False)
    assert (cold.read, cold.write) == (0, 1100)
    stored = {b.digest for b in cold.touched}
    other = messages.account_input(_cached_body("question two"))
    warm = promptcache.cache_use(other, stored.__contains__)
    assert (warm.read, warm.write) == (1100, 0)
    reply = messages.build_reply(_cached_body("question two"), warm, broken_json=False)
    assert reply.usage["cache_read_input_tokens"] == 1100
    assert reply.usage["input_tokens"] == other.total_tokens - 1100


def test_one_hour_ttl_is_reported_in_the_cache_creation_breakdown() -> None:
    system = [
        {"type": "text", "text": "S" * 4400, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    body = _body("q", system=system)
    cache = promptcache.cache_use(messages.account_input(body), lambda digest: False)
    usage = messages.build_reply(body, cache, broken_json=False).usage
    assert usage["cache_creation"] == {
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": 1100,
    }


def test_no_cache_control_means_no_cache_tokens() -> None:
    body = _body("plain")
    reply = messages.build_reply(
        body, promptcache.cache_use(messages.account_input(body), bool), broken_json=False
    )
    assert reply.usage["cache_creation_input_tokens"] == 0
    assert reply.usage["cache_read_input_tokens"] == 0


def test_max_tokens_truncates_the_reply() -> None:
    body = _body("Topic: tides\nWrite a report.", max_tokens=10)
    reply = messages.build_reply(body, messages.CacheUse(), broken_json=False)
    assert reply.stop_reason == "max_tokens"
    assert reply.usage["output_tokens"] == 10
    assert len(reply.text) == 40


def test_web_search_tool_adds_server_tool_blocks_and_usage() -> None:
    body = _body("Topic: tides", tools=[{"type": "web_search_20250305", "name": "web_search"}])
    reply = messages.build_reply(body, messages.CacheUse(), broken_json=False)
    use, result = reply.blocks
    assert use["type"] == "server_tool_use"
    assert use["input"] == {"query": "tides"}
    assert result["type"] == "web_search_tool_result"
    assert result["tool_use_id"] == use["id"]
    assert reply.usage["server_tool_use"] == {"web_search_requests": 1, "web_fetch_requests": 0}
    assert "https://" in reply.text


def test_a_searchs_results_are_billed_as_input_of_its_request() -> None:
    """As the real API bills them: the results the model read are input tokens."""
    tools = [{"type": "web_search_20250305", "name": "web_search"}]
    body = _body("Topic: tides", tools=tools)
    plain = messages.build_reply(body, messages.CacheUse(), broken_json=False)
    searched = messages.build_reply(
        body, messages.CacheUse(), broken_json=False, result_tokens=5000
    )
    assert searched.usage["input_tokens"] == int(str(plain.usage["input_tokens"])) + 5000
    # A request without the search tool reads no results.
    asked = messages.build_reply(
        _body("Topic: tides"), messages.CacheUse(), broken_json=False, result_tokens=5000
    )
    assert asked.usage["input_tokens"] == messages.account_input(_body("Topic: tides")).total_tokens


def test_sse_events_follow_the_real_order_and_rebuild_the_text() -> None:
    reply = messages.build_reply(
        _body("Topic: tides\nWrite."), messages.CacheUse(), broken_json=False
    )
    events = messages.sse_events(reply, "msg_1", "m")
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    text = "".join(
        str(data["delta"]["text"])  # type: ignore[index]
        for name, data in events
        if name == "content_block_delta"
    )
    assert text == reply.text
    final = events[-2][1]
    assert final["usage"]["output_tokens"] == reply.usage["output_tokens"]  # type: ignore[index]
    assert final["delta"]["stop_reason"] == "end_turn"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (
            {"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
            "max_tokens",
        ),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}, "role"),
        ([], "JSON object"),
    ],
)
def test_invalid_requests_are_explained(body: object, problem: str) -> None:
    reason = messages.validate_request(body)
    assert reason is not None
    assert problem in reason


def test_valid_request_passes_validation() -> None:
    assert messages.validate_request(_body("x")) is None


def test_error_body_has_the_api_shape() -> None:
    assert messages.error_json(529, "busy") == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy"},
    }
    assert messages.error_json(429, "slow")["error"] == {
        "type": "rate_limit_error",
        "message": "slow",
    }

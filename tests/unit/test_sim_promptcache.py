"""The simulated prompt cache's rules: minimum length, lookback, TTL split and expiry."""

from __future__ import annotations

import math
from typing import Any

import pytest

from steadfast_dev.sim import messages, promptcache
from steadfast_dev.sim.promptcache import PromptCache, account_input, cache_use

pytestmark = pytest.mark.unit

FIVE_MIN: dict[str, str] = {"type": "ephemeral"}
ONE_HOUR: dict[str, str] = {"type": "ephemeral", "ttl": "1h"}


def _text(tokens: int, mark: dict[str, str] | None = None, letter: str = "S") -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": letter * (tokens * 4)}
    if mark is not None:
        block["cache_control"] = dict(mark)
    return block


def _body(model: str, system: list[dict[str, Any]], *user: dict[str, Any]) -> dict[str, Any]:
    content = list(user) or [{"type": "text", "text": "question"}]
    return {
        "model": model,
        "max_tokens": 100,
        "system": system,
        "messages": [{"role": "user", "content": content}],
    }


def _served(cache: PromptCache, use: promptcache.CacheUse, now: float) -> None:
    """What the simulator does once a request is served."""
    for digest in use.refreshed:
        cache.refresh(digest, now)
    for point in use.touched:
        cache.store(point.digest, point.ttl_s, now)


@pytest.mark.parametrize(
    ("model", "below", "above"),
    [("claude-sonnet-4-6", 1023, 1024), ("claude-haiku-4-5", 4095, 4096),
     ("claude-3-haiku", 2047, 2048), ("claude-opus-4-6", 4095, 4096)],
)  # fmt: skip
def test_a_prefix_below_the_models_minimum_is_not_cached(
    model: str, below: int, above: int
) -> None:
    short = account_input(_body(model, [_text(below, FIVE_MIN)]))
    assert cache_use(short, lambda _: False) == promptcache.CacheUse()
    assert cache_use(short, lambda _: True) == promptcache.CacheUse()  # nor read
    long = account_input(_body(model, [_text(above, FIVE_MIN)]))
    assert cache_use(long, lambda _: False).write == above


def test_a_denser_tokenizer_counts_each_block_for_more_and_caches_it_so() -> None:
    # A system block of 1,000 tokens by the rule, a user block of 30 and the message's
    # framing: at 1.5 the model counts 1,500 (now past Sonnet's minimum of 1,024 to be
    # cached) and half as much again of the rest, rounded up.
    body = _body("claude-sonnet-4-6", [_text(1000, FIVE_MIN)], _text(30))
    plain, dense = account_input(body), account_input(body, 1.5)
    framed = 30 + promptcache.MESSAGE_OVERHEAD_TOKENS
    assert plain.total_tokens == 1000 + framed
    assert dense.total_tokens == 1500 + math.ceil(framed * 1.5)
    assert cache_use(plain, lambda _: False) == promptcache.CacheUse()
    assert cache_use(dense, lambda _: False).write == 1500


def test_only_the_breakpoints_past_the_minimum_count() -> None:
    # System 600 tokens (ignored), then 600 more in the user message: 1200 (cached).
    body = _body("claude-sonnet-4-6", [_text(600, FIVE_MIN)], _text(597, FIVE_MIN, "U"))
    use = cache_use(account_input(body), lambda _: False)
    assert (use.read, use.write) == (0, 1200)
    assert [b.tokens for b in use.touched] == [1200]


def test_1_hour_and_5_minute_writes_are_split_at_the_last_1_hour_breakpoint() -> None:
    body = _body(
        "claude-sonnet-4-6", [_text(1500, ONE_HOUR), _text(500, FIVE_MIN, "T")], _text(97, FIVE_MIN)
    )
    cache = PromptCache()
    cold = cache_use(account_input(body), lambda d: cache.holds(d, 0.0))
    assert (cold.read, cold.write, cold.write_1h) == (0, 2100, 1500)
    reply = messages.build_reply(body, cold, broken_json=False)
    assert reply.usage["cache_creation"] == {
        "ephemeral_5m_input_tokens": 600,
        "ephemeral_1h_input_tokens": 1500,
    }
    _served(cache, cold, 0.0)
    # Ten minutes on, the 5-minute entries are gone and the hour-long one reads.
    later = cache_use(account_input(body), lambda d: cache.holds(d, 600.0))
    assert (later.read, later.write, later.write_1h) == (1500, 600, 0)


def test_entries_expire_after_their_ttl_and_a_read_restarts_it() -> None:
    cache = PromptCache()
    cache.store("five", 300, now=0.0)
    cache.store("hour", 3600, now=0.0)
    assert cache.holds("five", 299.0)
    assert not cache.holds("five", 300.0)
    assert cache.holds("hour", 3599.0)
    cache.refresh("hour", now=3000.0)
    assert cache.holds("hour", 6599.0)
    assert not cache.holds("hour", 6600.0)
    cache.refresh("five", now=400.0)  # an expired entry is not revived by a read
    assert not cache.holds("five", 400.0)


def test_an_expired_prefix_misses_and_is_written_again() -> None:
    body = _body("claude-sonnet-4-6", [_text(2000, FIVE_MIN)])
    cache = PromptCache()
    first = cache_use(account_input(body), lambda d: cache.holds(d, 0.0))
    _served(cache, first, 0.0)
    warm = cache_use(account_input(body), lambda d: cache.holds(d, 299.0))
    cold = cache_use(account_input(body), lambda d: cache.holds(d, 301.0))
    assert (warm.read, warm.write) == (2000, 0)
    assert (cold.read, cold.write) == (0, 2000)


def _conversation(blocks_after: int) -> list[dict[str, Any]]:
    """A first user message of ~1100 tokens, then ``blocks_after`` more blocks."""
    first = {"role": "user", "content": [_text(1100, None, "P")]}
    calls = [
        {"type": "text", "text": f"result {i} " * 5} for i in range(blocks_after)
    ]  # one user message with many blocks stands in for several tool turns
    return [first, {"role": "assistant", "content": "ok"}, {"role": "user", "content": calls}]


def _marked(conversation: list[dict[str, Any]], *where: tuple[int, int]) -> dict[str, Any]:
    marked: list[dict[str, Any]] = [
        {**m, "content": [dict(b) for b in m["content"]] if isinstance(m["content"], list)
         else m["content"]}
        for m in conversation
    ]  # fmt: skip
    for message, block in where:
        marked[message]["content"][block]["cache_control"] = dict(FIVE_MIN)
    return {"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": marked}


@pytest.mark.parametrize(("blocks_after", "found"), [(19, True), (20, False), (30, False)])
def test_a_breakpoint_finds_an_earlier_write_only_within_20_blocks(
    blocks_after: int, found: bool
) -> None:
    conversation = _conversation(blocks_after)
    cache = PromptCache()
    first = _marked(conversation[:1], (0, 0))
    _served(cache, cache_use(account_input(first), lambda _: False), 0.0)
    written = 1100 + promptcache.MESSAGE_OVERHEAD_TOKENS
    # After the written block come "ok" and the results: the breakpoint on the last
    # result sits blocks_after + 1 blocks past the written prefix.
    later = _marked(conversation, (2, blocks_after - 1))
    use = cache_use(account_input(later), lambda d: cache.holds(d, 1.0))
    assert use.read == (written if found else 0)
    # Keeping the earlier breakpoint finds the write however far back it is.
    kept = _marked(conversation, (0, 0), (2, blocks_after - 1))
    assert cache_use(account_input(kept), lambda d: cache.holds(d, 1.0)).read == written


def test_more_than_four_breakpoints_or_an_hour_after_five_minutes_is_refused() -> None:
    five = _body("claude-sonnet-4-6", [_text(10, FIVE_MIN) for _ in range(5)])
    assert "maximum of 4 blocks" in str(messages.validate_request(five))
    mixed = _body("claude-sonnet-4-6", [_text(10, FIVE_MIN), _text(10, ONE_HOUR)])
    assert "ttl='1h'" in str(messages.validate_request(mixed))
    ordered = _body("claude-sonnet-4-6", [_text(10, ONE_HOUR), _text(10, FIVE_MIN)])
    assert messages.validate_request(ordered) is None


def test_where_the_breakpoint_sits_is_not_part_of_the_prefix() -> None:
    plain = {"type": "tool_result", "tool_use_id": "t1", "content": "x" * 4400}
    marked = {**plain, "cache_control": dict(FIVE_MIN)}
    a = account_input({"model": "m", "messages": [{"role": "user", "content": [plain]}]})
    b = account_input({"model": "m", "messages": [{"role": "user", "content": [marked]}]})
    assert a.prefixes == b.prefixes


def test_a_new_tool_choice_misses_the_messages_but_reads_tools_and_system() -> None:
    tools = [{"name": "web_search", "description": "d" * 400, "input_schema": {}}]
    system = [_text(1500, ONE_HOUR)]
    user = [{"role": "user", "content": [_text(1000, FIVE_MIN, "U")]}]
    body = {"model": "claude-sonnet-4-6", "max_tokens": 100, "tools": tools,
            "system": system, "messages": user}  # fmt: skip
    cache = PromptCache()
    first = cache_use(account_input(body), lambda _: False)
    _served(cache, first, 0.0)
    same = cache_use(account_input(body), lambda d: cache.holds(d, 1.0))
    assert (same.read, same.write) == (first.write, 0)
    final = {**body, "tool_choice": {"type": "none"}}  # the deep loop's last turn
    use = cache_use(account_input(final), lambda d: cache.holds(d, 1.0))
    assert use.read == first.write_1h  # tools and system
    assert use.write == first.write - first.write_1h
    auto = {**body, "tool_choice": {"type": "auto"}}  # the default, spelled out
    assert cache_use(account_input(auto), lambda d: cache.holds(d, 1.0)).write == 0

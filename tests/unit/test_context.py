"""When a deep run must ask for its report: before one more turn could outgrow the window."""

from __future__ import annotations

import pytest

from steadfast_contract import context
from steadfast_contract.budget import CHARS_PER_TOKEN, estimate_tokens
from steadfast_contract.pricing import Usage
from steadfast_worker.pagetext import MAX_RESULT_CHARS, cap
from steadfast_worker.transcript import MAX_INPUT_CHARS

pytestmark = pytest.mark.unit

WINDOW = 200_000


def test_the_longest_result_a_tool_stores_fits_the_bound_a_turn_is_planned_with() -> None:
    """The growth bound holds only if no stored tool result is longer than
    MAX_TOOL_RESULT_CHARS: the longest fetch (a URL at the input limit, a page at its
    limit) fits whole, and anything longer is cut to the bound (a search answer)."""
    longest_fetch = f"URL: {'u' * MAX_INPUT_CHARS}\n\n{'p' * MAX_RESULT_CHARS}"
    assert len(longest_fetch) <= context.MAX_TOOL_RESULT_CHARS
    words = "result " * (3 * context.MAX_TOOL_RESULT_CHARS)
    assert len(cap(words, context.MAX_TOOL_RESULT_CHARS)) <= context.MAX_TOOL_RESULT_CHARS
    assert context.turn_growth_chars(4000) >= (
        context.MAX_IO_CALLS_PER_TURN * len(longest_fetch) + 4000 * CHARS_PER_TOKEN
    )


@pytest.mark.parametrize("max_tokens", [1000, 4000, 32_000])
def test_the_last_turn_comes_exactly_when_one_more_could_pass_the_usable_window(
    max_tokens: int,
) -> None:
    # The longest prompt that may still go on to a turn with tools, found by search.
    low, high = 0, WINDOW * CHARS_PER_TOKEN
    while low < high:
        mid = (low + high + 1) // 2
        if context.must_finish(mid, max_tokens, WINDOW):
            high = mid - 1
        else:
            low = mid
    after = estimate_tokens(low + context.turn_growth_chars(max_tokens)) + max_tokens
    assert after <= WINDOW * context.USABLE  # going on from here stays within the window
    assert context.must_finish(low + CHARS_PER_TOKEN, max_tokens, WINDOW)  # one token more: not


def test_a_real_window_leaves_room_for_a_long_run_and_a_small_one_ends_early() -> None:
    # 200,000 tokens, 4,000 out: a conversation of 400,000 characters (about twenty
    # turns reading two pages each) still goes on; one of 500,000 must finish.
    assert not context.must_finish(400_000, 4000, WINDOW)
    assert context.must_finish(500_000, 4000, WINDOW)
    # A window smaller than one worst-case turn finishes at once.
    assert context.must_finish(0, 4000, 20_000)


def test_the_counted_conversation_is_the_whole_prompt_the_api_counted_and_the_reply() -> None:
    # 900 tokens uncached, 20,000 read from the cache, 3,000 written to it; 400 written.
    usage = Usage(
        input_tokens=900, output_tokens=400, cache_read_tokens=20_000, cache_write_tokens=3_000
    )
    assert context.counted_chars(usage) == (900 + 20_000 + 3_000 + 400) * CHARS_PER_TOKEN


def test_a_usage_that_names_no_prompt_counts_nothing() -> None:
    # A reply stored without its usage: the workflow keeps its own estimate then.
    assert context.counted_chars(Usage()) == 0
    assert context.counted_chars(Usage(output_tokens=50)) == 0

"""When a deep run must ask for its report: before its conversation outgrows the model.

Every turn of the deep loop sends the whole conversation, and every tool result
adds to it. The model refuses a request whose prompt and ``max_tokens`` together
exceed its context window (HTTP 400, "prompt is too long"), and no retry can help.
A run that only stopped at ``maxTurns`` could therefore pay for fifteen turns and
then be refused at the sixteenth, with no report. So the loop asks for the report
while one more turn would still surely fit: :func:`must_finish`, a pure function
of what the workflow already counts (the prompt's characters), at turn boundaries.

One more turn grows the prompt by at most its reply (``max_tokens``) and the results
of its tool calls: at most :data:`MAX_IO_CALLS_PER_TURN` calls that do I/O run in a
turn (the rest are answered with an error), each result at most
:data:`MAX_TOOL_RESULT_CHARS`. Characters become tokens at the budget's estimate,
which real text can beat, so only :data:`USABLE` of the window is planned on.

What the conversation already holds needs no estimate: the API says how many tokens
it counted in each turn's prompt (its usage), and the turn's reply is its output
tokens (:func:`counted_chars`). Only what is new since, the tool results, is
estimated. Text that tokenizes worse than the estimate (code, addresses, numbers,
random strings) would otherwise pile up unseen, turn after turn, until a prompt
the window cannot take is refused with the run's report still unwritten.
"""

from __future__ import annotations

from typing import Final

from steadfast_contract.budget import CHARS_PER_TOKEN, estimate_tokens
from steadfast_contract.pricing import Usage

#: web_search and fetch_page calls one turn runs; the model is told to call the rest later.
MAX_IO_CALLS_PER_TURN: Final = 8
#: The longest tool result the model is given (a page is cut to 12,000 characters first).
MAX_TOOL_RESULT_CHARS: Final = 16_000
#: The share of the window planned on: the character estimate can undercount tokens.
USABLE: Final = 0.8
#: Answers to calls that do no I/O (record_finding) and the framing of the results.
_SLACK_CHARS: Final = 2_000


def turn_growth_chars(max_tokens: int) -> int:
    """The most characters one turn with tools can add to the conversation."""
    return (
        max_tokens * CHARS_PER_TOKEN + MAX_IO_CALLS_PER_TURN * MAX_TOOL_RESULT_CHARS + _SLACK_CHARS
    )


def must_finish(prompt_chars: int, max_tokens: int, context_tokens: int) -> bool:
    """Whether the next turn must be the last (no tools, the report asked for): after
    one more turn with tools, the turn after it might not fit the window."""
    after_one_more = estimate_tokens(prompt_chars + turn_growth_chars(max_tokens))
    return after_one_more + max_tokens > context_tokens * USABLE


def counted_chars(usage: Usage) -> int:
    """The conversation after a turn, in the budget's characters (:data:`CHARS_PER_TOKEN`
    a token), as the API counted it: the turn's whole prompt (uncached, read from the
    cache and written to it) and its reply. 0 when the usage names no prompt."""
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    if prompt <= 0:
        return 0
    return (prompt + usage.output_tokens) * CHARS_PER_TOKEN

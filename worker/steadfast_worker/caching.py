"""Where a deep turn's request asks the prompt cache to keep its prefix.

A tool-use loop resends the whole conversation every turn, so without the cache
turn n pays full price for everything turn n-1 already sent. The Messages API
caches the prefix ending at each ``cache_control`` breakpoint (at most four per
request), and a later request reads a cached prefix only where one of its own
breakpoints ends it, or up to 20 blocks before one. The placement here makes turn
n read what turn n-1 wrote:

1. the stable head -- the last tool definition, and the system prompt after it --
   for an hour: it never changes within a run, and a run may pause for longer than
   five minutes (a retry's backoff, a lost worker, a budget pause);
2. the last block of the previous user message: the breakpoint turn n-1 wrote,
   kept, so its prefix is found again exactly, however many blocks the turn added
   (a turn with k parallel tool calls adds 2k + 1: text, calls and results, past
   the 20-block lookback once k reaches 10);
3. the last block of the newest user message: written now, read by turn n+1.

The last turn of a run reads turn n-1's prefix like any other, but writes
nothing: no turn follows to read it (``last_turn``). A request that changes
``tool_choice`` or the thinking settings can read only the head, since the API
keys the messages' cache on them: it marks the head alone (``head_only``). That is
why the last turn keeps ``tool_choice: auto`` and asks for the report in words
(:data:`steadfast_worker.transcript.LAST_TURN_NOTE`).

The real API ignores a breakpoint whose prefix is shorter than the model's minimum
cacheable length (:func:`steadfast_contract.pricing.min_cacheable_tokens`), without
an error. Given the model, the head's breakpoints go only where their prefix
(estimated as the budget does, rounded down) reaches it, leaving the slot unused rather
than wasted; the messages' breakpoints still cover a short head. An hour-long
breakpoint may not follow a five-minute one, so the head's come first.

Earlier turns' marks are cleared first: the request's parts are mutated in place
and a conversation read back from the store may still carry them, and a fifth
breakpoint is refused (HTTP 400).

Pure functions over the request's plain dicts; no I/O.
"""

from __future__ import annotations

import json
from typing import Any, Final

from steadfast_contract import budget
from steadfast_contract.pricing import min_cacheable_tokens

#: The API allows at most this many breakpoints in one request.
MAX_BREAKPOINTS: Final = 4
FIVE_MINUTES: Final[dict[str, str]] = {"type": "ephemeral"}
ONE_HOUR: Final[dict[str, str]] = {"type": "ephemeral", "ttl": "1h"}
#: The system prompt the API adds in front of a request that defines tools (Claude 4
#: models, ``tool_choice`` auto or none): part of every prefix the tools start.
TOOL_USE_SYSTEM_TOKENS: Final = 346
#: A rough tokenizer (rounded down): a head estimated short of the minimum is left
#: unmarked, and the messages' breakpoints, whose prefixes hold it, cache it instead.
CHARS_PER_TOKEN: Final = 4
#: Blocks that cannot carry ``cache_control``.
_UNMARKABLE: Final = frozenset({"thinking", "redacted_thinking"})


def _tokens(part: object) -> int:
    text = part if isinstance(part, str) else json.dumps(part, sort_keys=True)
    return budget.token_chars(text) // CHARS_PER_TOKEN


def _clear(blocks: list[Any]) -> None:
    for block in blocks:
        if isinstance(block, dict):
            block.pop("cache_control", None)
            inner = block.get("content")
            if block.get("type") == "tool_result" and isinstance(inner, list):
                _clear(inner)


def _markable(block: object) -> bool:
    if not isinstance(block, dict) or block.get("type") in _UNMARKABLE:
        return False
    # The API refuses cache_control on an empty text block.
    return block.get("type") != "text" or bool(block.get("text"))


def _last_block(message: dict[str, Any]) -> dict[str, Any] | None:
    """The last block of ``message`` that can carry a breakpoint."""
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            return None
        message["content"] = [{"type": "text", "text": content}]
        content = message["content"]
    if not isinstance(content, list):
        return None
    for block in reversed(content):
        if _markable(block):
            found: dict[str, Any] = block
            return found
    return None


def _head_marks(
    system: list[dict[str, Any]], tools: list[dict[str, Any]], min_tokens: int
) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """(block, cache_control) for the tools and the system prompt that can be cached."""
    marks: list[tuple[dict[str, Any], dict[str, str]]] = []
    size = TOOL_USE_SYSTEM_TOKENS + sum(_tokens(t) for t in tools) if tools else 0
    if tools and size >= min_tokens:
        marks.append((tools[-1], ONE_HOUR))
    size += sum(_tokens(b.get("text", b)) for b in system)
    if system and size >= min_tokens and _markable(system[-1]):
        marks.append((system[-1], ONE_HOUR))
    return marks


def mark_breakpoints(
    system: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    messages: list[dict[str, Any]],
    model: str = "",
    *,
    last_turn: bool = False,
    head_only: bool = False,
) -> int:
    """Put the cache breakpoints into the request's parts, in place; returns how many.

    ``model`` names the model the request goes to: with it, the head's breakpoints
    are placed only where the model's minimum cacheable length can be reached;
    without it, the tools and the system prompt are always marked. ``last_turn``
    leaves the newest user message unmarked (nothing will read it), ``head_only``
    every message (the request cannot read the turns' cache).
    """
    _clear(system)
    _clear(tools)
    for message in messages:
        if isinstance(message.get("content"), list):
            _clear(message["content"])
    min_tokens = min_cacheable_tokens(model) if model else 0
    marks = _head_marks(system, tools, min_tokens)
    users = [m for m in messages if m.get("role") == "user"]
    wanted = [] if head_only else users[-2:-1] if last_turn else users[-2:]
    newest = [b for b in (_last_block(m) for m in wanted) if b is not None]
    room = MAX_BREAKPOINTS - len(marks)
    marks += [(b, FIVE_MINUTES) for b in (newest[-room:] if room else [])]
    for block, control in marks:
        block["cache_control"] = dict(control)
    return len(marks)

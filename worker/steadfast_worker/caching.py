"""Where a deep turn's request asks the prompt cache to keep its prefix.

A tool-use loop resends the whole conversation every turn, so without the cache
turn n pays full price for everything turn n-1 already sent. The Messages API
caches the prefix ending at each ``cache_control`` breakpoint (at most four per
request) and a later request reads the longest cached prefix it shares. The
placement here makes turn n read what turn n-1 wrote:

1. the last tool definition, for an hour (the tools never change within a run);
2. the system prompt (with the tools, the stable head of every request);
3. the last block of the previous user message: the breakpoint turn n-1 wrote,
   kept, so its prefix is found again;
4. the last block of the newest user message: written now, read by turn n+1.

Pure functions over the request's plain dicts; no I/O.
"""

from __future__ import annotations

from typing import Any, Final

#: The API allows at most this many breakpoints in one request.
MAX_BREAKPOINTS: Final = 4
FIVE_MINUTES: Final[dict[str, str]] = {"type": "ephemeral"}
ONE_HOUR: Final[dict[str, str]] = {"type": "ephemeral", "ttl": "1h"}


def _last_block(message: dict[str, Any]) -> dict[str, Any] | None:
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = [{"type": "text", "text": content}]
        content = message["content"]
    if isinstance(content, list) and content and isinstance(content[-1], dict):
        block: dict[str, Any] = content[-1]
        return block
    return None


def mark_breakpoints(
    system: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    messages: list[dict[str, Any]],
) -> int:
    """Put the cache breakpoints into the request's parts, in place; returns how many.

    A ``ttl`` of an hour may not follow one of five minutes in the request, so the
    hour-long one goes on the tools, which come first.
    """
    marked = 0
    if tools:
        tools[-1]["cache_control"] = dict(ONE_HOUR)
        marked += 1
    if system:
        system[-1]["cache_control"] = dict(FIVE_MINUTES)
        marked += 1
    users = [m for m in messages if m.get("role") == "user"]
    for message in users[-2:][-(MAX_BREAKPOINTS - marked) :] if marked < MAX_BREAKPOINTS else []:
        block = _last_block(message)
        if block is not None:
            block["cache_control"] = dict(FIVE_MINUTES)
            marked += 1
    return marked

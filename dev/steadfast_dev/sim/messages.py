"""Pure builders for the simulated Messages API: usage, the reply, and its SSE events.

Kept apart from the HTTP handler so the wire shapes -- the part the real
``anthropic`` SDK must parse -- are unit-tested without a server.

Prompt caching follows the real API's rules (:mod:`steadfast_dev.sim.promptcache`):
each content block carrying ``cache_control`` (in the order tools, system,
messages) is a breakpoint, cached only if its prefix reaches the model's minimum
cacheable length; a request reads the longest cached prefix found at a breakpoint
or up to 20 blocks before one, and writes the rest up to its last breakpoint, split
in ``usage.cache_creation`` into 1-hour and 5-minute writes; the tokens in neither
are plain ``input_tokens``. A request defining client tools pays the tool-use system
prompt the real API adds in front of everything (``promptcache.TOOL_SYSTEM_TOKENS``).
Replies of the simulated tool-use agent (:mod:`steadfast_dev.sim.agent`) reuse the
same usage, JSON and SSE builders: their ``tool_use`` blocks follow the text.

A request whose prompt holds the API's documented refusal test string
(:data:`REFUSAL_TRIGGER`) is refused as the streaming classifiers refuse: a few words,
``stop_reason: "refusal"`` and ``stop_details``, billed up to there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from steadfast_dev.sim import content, tooluse

# Re-exported: the agent's replies and older callers take them from here.
from steadfast_dev.sim.promptcache import CacheUse as CacheUse
from steadfast_dev.sim.promptcache import InputAccount as InputAccount
from steadfast_dev.sim.promptcache import account_input as account_input
from steadfast_dev.sim.promptcache import validate_breakpoints

#: Characters per streamed text delta: a few tokens, as the real API sends.
CHUNK_CHARS: Final = 24
WEB_SEARCH_RESULTS: Final = 5


def web_search_tool(body: Mapping[str, object]) -> Mapping[str, object] | None:
    """The request's server-side web search tool definition, if it has one."""
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, Mapping) and str(tool.get("type", "")).startswith("web_search_"):
            return tool
    return None


@dataclass(frozen=True)
class Reply:
    """Everything the model "said" for one request, independent of the wire format."""

    blocks: tuple[dict[str, object], ...]
    """Content blocks before the final text block (server tool use and results)."""

    text: str
    stop_reason: str
    stop_sequence: str | None
    usage: dict[str, object]
    tool_uses: tuple[dict[str, object], ...] = ()
    """Client ``tool_use`` blocks after the text (the agent's calls this turn)."""
    stop_details: dict[str, object] | None = None
    """Why a refused reply was refused (``stop_reason: refusal``)."""
    cut_json: str | None = None
    """The last ``tool_use``'s input JSON as far as it was written when ``max_tokens``
    cut it off (a prefix, never valid JSON): streamed as it is, while the block's
    ``input`` (what a non-streaming answer holds) is ``{}``."""


#: The Messages API's documented test string: a request whose prompt holds it (the
#: system prompt, a message, a tool result) is refused, as by the streaming classifiers.
REFUSAL_TRIGGER: Final = (
    "ANTHROPIC_MAGIC_STRING_TRIGGER_REFUSAL_"
    "1FAEFB6177B4672DEE07F9D3AFC62588CCD2631EDCF22E8CCC1FB35B501C9C86"
)
REFUSAL_DETAILS: Final[Mapping[str, object]] = MappingProxyType(
    {
        "type": "refusal",
        "category": "cyber",
        "explanation": "This request was declined because it could enable cyber harm.",
    }
)
#: Characters of the answer written before the classifiers stop it.
REFUSED_AFTER_CHARS: Final = 40


def refused(reply: Reply) -> Reply:
    """``reply`` stopped by a refusal: the first words of its text and no tool call,
    billed for the input and the output written up to there, as the real API bills."""
    text = reply.text[:REFUSED_AFTER_CHARS]
    usage = {**reply.usage, "output_tokens": max(content.estimate_tokens(text), 1)}
    usage.pop("server_tool_use", None)
    return Reply((), text, "refusal", None, usage, stop_details=dict(REFUSAL_DETAILS))


def build_reply(
    body: Mapping[str, object],
    cache: CacheUse,
    *,
    broken_json: bool,
    says: str = "",
    answer: str = "",
    result_tokens: int = 0,
    account: InputAccount | None = None,
) -> Reply:
    """The reply to a validated Messages request (``says``, ``answer``: see
    ``ServicePlan``); a server-side search's results add ``result_tokens`` to its input,
    as billed. ``account``: its input as counted already, else counted here."""
    account = account or account_input(body)
    blocks: list[dict[str, object]] = []
    context = ""
    searches = 0
    output_tokens = 0
    if web_search_tool(body) is not None:
        query = content.topic_of(content.prompt_text(body), content.last_user_text(body))
        tool_id = "srvtoolu_" + hashlib.sha256(query.encode()).hexdigest()[:24]
        results = content.web_search_result_blocks(query, WEB_SEARCH_RESULTS)
        blocks.append(
            {
                "type": "server_tool_use",
                "id": tool_id,
                "name": "web_search",
                "input": {"query": query},
            }
        )
        blocks.append(
            {"type": "web_search_tool_result", "tool_use_id": tool_id, "content": results}
        )
        context = "\n".join(f"{r['title']} {r['url']}" for r in results)
        searches = 1
        output_tokens += content.estimate_tokens(json.dumps({"query": query}))
    full = answer or content.model_answer(body, broken_json=broken_json, context=context, says=says)
    max_tokens = body.get("max_tokens")
    limit = max_tokens if isinstance(max_tokens, int) else 4096
    raw_stops = body.get("stop_sequences")
    stops = [s for s in raw_stops if isinstance(s, str)] if isinstance(raw_stops, list) else []
    text, stop_reason, stop_sequence = content.truncate(full, max(limit - output_tokens, 0), stops)
    output_tokens += max(content.estimate_tokens(text), 1)
    usage = usage_json(account, cache, output_tokens, searches * result_tokens)
    if searches:
        usage["server_tool_use"] = {"web_search_requests": searches, "web_fetch_requests": 0}
    return Reply(tuple(blocks), text, stop_reason, stop_sequence, usage)


def usage_json(
    account: InputAccount, cache: CacheUse, output_tokens: int, tool_input_tokens: int = 0
) -> dict[str, object]:
    """The ``usage`` object of a reply: input split by cache use (``tool_input_tokens``:
    what server-side tools' results added), and the output."""
    return {
        "input_tokens": account.total_tokens - cache.read - cache.write + tool_input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache.write,
        "cache_read_input_tokens": cache.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache.write - cache.write_1h,
            "ephemeral_1h_input_tokens": cache.write_1h,
        },
        "service_tier": "standard",
    }


def tool_use_tokens(block: Mapping[str, object]) -> int:
    """Output tokens of a ``tool_use`` block: its name and its JSON input."""
    return content.estimate_tokens(f"{block['name']}{json.dumps(block['input'])}") + 1


def message_json(reply: Reply, msg_id: str, model: str) -> dict[str, object]:
    """The non-streaming response body."""
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [*reply.blocks, *_text_block(reply), *reply.tool_uses],
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        **({"stop_details": reply.stop_details} if reply.stop_details else {}),
        "usage": reply.usage,
    }


def _text_block(reply: Reply) -> list[dict[str, object]]:
    # A turn that only calls tools may say nothing first.
    return [] if reply.tool_uses and not reply.text else [{"type": "text", "text": reply.text}]


def sse_events(reply: Reply, msg_id: str, model: str) -> list[tuple[str, dict[str, object]]]:
    """The streaming response as (event name, data) pairs, in the real API's order."""
    start_usage = {**reply.usage, "output_tokens": 1}
    start_usage.pop("server_tool_use", None)
    message = {
        **message_json(reply, msg_id, model),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    message.pop("stop_details", None)
    events: list[tuple[str, dict[str, object]]] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("ping", {"type": "ping"}),
    ]
    index = 0
    for block in reply.blocks:
        if block["type"] == "server_tool_use":
            # Tool input arrives as JSON deltas after an empty-input block start.
            events.append(_block_start(index, {**block, "input": {}}))
            partial = json.dumps(block["input"])
            delta = {"type": "input_json_delta", "partial_json": partial}
            events.append(_block_delta(index, delta))
        else:
            events.append(_block_start(index, block))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    if _text_block(reply):
        events.append(_block_start(index, {"type": "text", "text": ""}))
        for at in range(0, len(reply.text), CHUNK_CHARS):
            chunk = reply.text[at : at + CHUNK_CHARS]
            events.append(_block_delta(index, {"type": "text_delta", "text": chunk}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    for number, block in enumerate(reply.tool_uses, 1):
        # As the real API streams a client tool call: the block with an empty input,
        # an empty first delta, then the JSON input a few characters at a time.
        events.append(_block_start(index, {**block, "input": {}}))
        cut = reply.cut_json if number == len(reply.tool_uses) else None
        partial = json.dumps(block["input"]) if cut is None else cut
        pieces = [partial[at : at + CHUNK_CHARS] for at in range(0, len(partial), CHUNK_CHARS)]
        for piece in ["", *pieces]:
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(_block_delta(index, delta))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    final_usage = {
        k: v for k, v in reply.usage.items() if k not in ("cache_creation", "service_tier")
    }
    ending: dict[str, object] = {
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        **({"stop_details": reply.stop_details} if reply.stop_details else {}),
    }
    events.append(
        ("message_delta", {"type": "message_delta", "delta": ending, "usage": final_usage})
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _block_start(index: int, block: Mapping[str, object]) -> tuple[str, dict[str, object]]:
    data = {"type": "content_block_start", "index": index, "content_block": dict(block)}
    return "content_block_start", data


def _block_delta(index: int, delta: Mapping[str, object]) -> tuple[str, dict[str, object]]:
    return "content_block_delta", {
        "type": "content_block_delta",
        "index": index,
        "delta": dict(delta),
    }


def encode_sse(event: str, data: Mapping[str, object]) -> bytes:
    """One server-sent event on the wire."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def error_json(status: int, message: str) -> dict[str, object]:
    """The Messages API's error body for an HTTP status."""
    kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        504: "timeout_error",
        529: "overloaded_error",
    }
    return {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}


def validate_request(body: object) -> str | None:
    """Why a Messages request is invalid (the 400 message), or None if it is fine."""
    if not isinstance(body, Mapping):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: Field required and must be a positive integer"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: must be 'user' or 'assistant'"
        if not isinstance(message.get("content"), str | list):
            return f"messages.{i}.content: Field required"
    return validate_breakpoints(body) or tooluse.validate_tools(body)

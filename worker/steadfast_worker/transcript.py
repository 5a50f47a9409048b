"""A deep run's conversation: the prompt, the tools, and the messages rebuilt from the store.

The conversation of a tool-use loop grows every turn; carried through workflow
history it would be resent (and recorded) on every turn, which is how other
agent frameworks' histories reach 50 MB after fifty calls. Here it lives in the
report store as parts -- ``assistant`` (a reply, with what it cost) and
``result:<tool_use_id>`` (a tool's answer) per turn -- and each turn's activity
rebuilds the request from them. History carries ids, small inputs and costs.

Pure functions over the stored parts; the store is
:mod:`steadfast_worker.activities.storage`, the caller
:mod:`steadfast_worker.activities.deep`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from steadfast_contract import stops
from steadfast_contract.activities import (
    TOOL_FETCH_PAGE,
    TOOL_RECORD_FINDING,
    TOOL_WEB_SEARCH,
    ToolCall,
)
from steadfast_contract.context import MAX_IO_CALLS_PER_TURN
from steadfast_contract.pricing import Usage
from steadfast_contract.text import well_formed

SYSTEM: Final = (
    "You are a careful research agent. Use web_search to find sources, fetch_page to read "
    "them, and record_finding to note each claim with the URL it came from; call several "
    "tools at once when they do not depend on each other. When you know enough, or when "
    "no tools are offered, write a concise markdown report with a summary, the key "
    "findings and a Sources section. Cite every claim by URL and never invent a source."
)


def _tool(name: str, description: str, fields: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": {k: {"type": "string", "description": v} for k, v in fields.items()},
            "required": list(fields),
        },
    }


TOOLS: Final[tuple[dict[str, Any], ...]] = (
    _tool(
        TOOL_WEB_SEARCH,
        "Search the web. Returns results with title, url and snippet.",
        {"query": "The search query."},
    ),
    _tool(
        TOOL_FETCH_PAGE,
        "Fetch a web page by URL and return its text.",
        {"url": "An http(s) URL."},
    ),
    _tool(
        TOOL_RECORD_FINDING,
        "Record a finding for the report, with the URL of its source.",
        {"claim": "One sentence the source supports.", "source_url": "The page it came from."},
    ),
)
REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    str(t["name"]): tuple(t["input_schema"]["required"]) for t in TOOLS
}
#: The longest string a tool input field may carry into history and the next prompt.
MAX_INPUT_CHARS: Final = 2000
#: What the inputs of one turn's tool calls may take in its output payload, escaped as
#: Temporal's JSON converter writes them (:func:`steadfast_contract.stops.payload_bytes`).
#: Many long calls in a script of 6-byte characters would otherwise make an output
#: larger than a payload may be (2 MB), and the turn, paid for, would fail for good.
MAX_TURN_INPUT_BYTES: Final = 500_000
ASSISTANT: Final = "assistant"
RESULT: Final = "result:"
#: A last turn's reply that called tools: paid for, never sent back to the model; a
#: later attempt of that turn finds it and asks for the report without tools at once.
SET_ASIDE: Final = "set-aside"


def first_prompt(topic: str) -> str:
    return f"Research the topic below and write a cited report.\nTopic: {topic}"


#: What a run's last turn adds to its newest user message. That turn offers the
#: tools with the ``tool_choice`` of every turn before it, because the API keys the
#: messages' prompt cache on ``tool_choice``: so it reads the whole conversation from
#: the cache, where ``tool_choice: none`` would pay for all of it again. The note
#: asks for the report instead; a reply that calls tools anyway is asked again
#: with ``none`` (:mod:`steadfast_worker.activities.deep`).
LAST_TURN_NOTE: Final = (
    "This is your last turn: no tool call will run after it. Do not call any tool; "
    "write the final report now from what you have found, citing its sources."
)


def ask_for_the_report(messages: list[dict[str, Any]]) -> None:
    """Append :data:`LAST_TURN_NOTE` to the newest (user) message, in place."""
    newest = messages[-1]
    content = newest["content"]
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    newest["content"] = [*content, {"type": "text", "text": LAST_TURN_NOTE}]


def tool_calls(content: Iterable[Mapping[str, Any]]) -> list[ToolCall]:
    """The reply's tool calls, each checked against its tool's schema.

    Model output is untrusted: an unknown tool, a missing or non-string field is
    not run; it becomes a call with ``problem`` set, answered with an error result
    so the model can correct itself next turn. So is a web_search or fetch_page call
    past the first :data:`~steadfast_contract.context.MAX_IO_CALLS_PER_TURN` of the
    reply: what one turn adds to the conversation stays bounded.
    """
    calls = []
    io_calls = 0
    carried = 0
    for block in content:
        if block.get("type") != "tool_use":
            continue
        call_id, name, raw = (
            str(block.get("id", "")),
            str(block.get("name", "")),
            block.get("input"),
        )
        required = REQUIRED.get(name)
        if required is None:
            calls.append(ToolCall(call_id, name[:100], problem=f"there is no tool {name[:100]!r}"))
            continue
        given = raw if isinstance(raw, Mapping) else {}
        missing = [f for f in required if not isinstance(given.get(f), str) or not given[f]]
        if missing:
            problem = f"invalid input for {name}: {', '.join(missing)} must be non-empty strings"
            calls.append(ToolCall(call_id, name, problem=problem))
            continue
        inputs = {f: well_formed(str(given[f])[:MAX_INPUT_CHARS]) for f in required}
        carried += sum(stops.payload_bytes(v) for v in inputs.values())
        if carried > MAX_TURN_INPUT_BYTES:
            problem = (
                "not run: this turn's tool calls carry more than a run can keep "
                f"({MAX_TURN_INPUT_BYTES} bytes); make fewer or shorter calls"
            )
            calls.append(ToolCall(call_id, name, problem=problem))
            continue
        if name in (TOOL_WEB_SEARCH, TOOL_FETCH_PAGE):
            io_calls += 1
            if io_calls > MAX_IO_CALLS_PER_TURN:
                problem = (
                    f"not run: at most {MAX_IO_CALLS_PER_TURN} web_search and fetch_page "
                    "calls run in one turn; call it again in the next"
                )
                calls.append(ToolCall(call_id, name, problem=problem))
                continue
        calls.append(ToolCall(call_id, name, inputs))
    return calls


#: How deep a tool call's input may nest and be kept as the model wrote it. Every tool
#: takes flat strings; a few thousand brackets (a page can ask for them) nest past what
#: the JSON parser can read back, turn after turn.
MAX_INPUT_DEPTH: Final = 16


class _TooDeepError(Exception):
    """A tool input nested past :data:`MAX_INPUT_DEPTH`."""


def _held(value: Any, depth: int, limit: int | None) -> Any:
    """``value`` (parsed JSON) with every string well-formed; _TooDeepError past ``limit``."""
    if isinstance(value, str):
        return well_formed(value)
    if limit is not None and depth > limit and isinstance(value, dict | list):
        raise _TooDeepError
    if isinstance(value, dict):
        return {well_formed(str(k)): _held(v, depth + 1, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_held(v, depth + 1, limit) for v in value]
    return value


def sendable(block: Mapping[str, Any]) -> dict[str, Any]:
    """A reply's content block as the transcript keeps it and later turns send it back.

    The model's text and tool inputs are untrusted, and JSON may spell a NUL or a lone
    surrogate (``\ud800``), which no request body can carry: every later turn would
    fail before it is sent. So every string is made well-formed, and a tool call's
    input nested past :data:`MAX_INPUT_DEPTH` is kept as ``{}`` (its call is not run:
    :func:`tool_calls` finds its fields missing and the model is told so).
    """
    kept: dict[str, Any] = {}
    for key, value in block.items():
        if key == "input" and block.get("type") == "tool_use":
            try:
                kept[key] = _held(value, 0, MAX_INPUT_DEPTH)
            except _TooDeepError:
                kept[key] = {}
        else:
            kept[key] = _held(value, 0, None)
    return kept


def reply_text(content: Iterable[Mapping[str, Any]]) -> str:
    """A reply's text blocks, as text every store can hold (``text.well_formed``)."""
    return well_formed("".join(str(b.get("text", "")) for b in content if b.get("type") == "text"))


@dataclass
class StoredReply:
    """An assistant reply as the transcript keeps it."""

    content: list[dict[str, Any]]
    stop_reason: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    request: str = ""
    """The day's-ledger key of the request that paid for it (empty: stored before the
    transcript kept it): an attempt after a lost one counts it as used, not as lost."""
    refusal: str = ""
    """What a refused reply's refusal said (``stop_reason: refusal``), for an attempt
    that finds it stored."""

    def dumps(self) -> str:
        return json.dumps(
            {
                "content": self.content,
                "stop_reason": self.stop_reason,
                "usage": self.usage,
                "cost_usd": self.cost_usd,
                **({"request": self.request} if self.request else {}),
                **({"refusal": self.refusal} if self.refusal else {}),
            }
        )

    @classmethod
    def loads(cls, body: str) -> StoredReply:
        data = json.loads(body)
        return cls(
            list(data.get("content", [])),
            str(data.get("stop_reason", "")),
            {k: int(v) for k, v in dict(data.get("usage", {})).items()},
            float(data.get("cost_usd", 0.0)),
            str(data.get("request", "")),
            str(data.get("refusal", "")),
        )


@dataclass(frozen=True)
class Paid:
    """The request that paid for a stored tool result (a search through the LLM)."""

    request: str
    """Its day's-ledger key."""
    cost_usd: float
    usage: Usage


def result_body(text: str, is_error: bool, paid: Paid | None = None) -> str:
    """A tool result as the transcript keeps it, with what paid for it, if anything did."""
    body: dict[str, Any] = {"text": text, "is_error": is_error}
    if paid is not None:
        body["paid"] = {
            "request": paid.request,
            "cost_usd": paid.cost_usd,
            "usage": asdict(paid.usage),
        }
    return json.dumps(body)


def paid_result(body: Mapping[str, Any]) -> Paid | None:
    """What paid for a stored tool result (its decoded :func:`result_body`), if anything."""
    raw = body.get("paid")
    if not raw:
        return None
    usage = Usage(**dict(raw.get("usage") or {}))
    return Paid(str(raw.get("request", "")), float(raw.get("cost_usd", 0.0)), usage)


def paid_for(parts: Iterable[tuple[str, str]]) -> dict[str, float]:
    """The requests that paid for stored ``(part, body)`` pairs (replies, and tool
    results a paid search gave), by day's-ledger key, with their cost: an attempt
    that uses what is stored counts it, so it is no lost attempt's spend."""
    paid: dict[str, float] = {}
    for name, body in parts:
        if name in (ASSISTANT, SET_ASIDE):
            reply = StoredReply.loads(body)
            key, cost = reply.request, reply.cost_usd
        else:
            result = paid_result(json.loads(body))
            key, cost = (result.request, result.cost_usd) if result else ("", 0.0)
        if key:
            paid[key] = cost
    return paid


def messages(topic: str, parts: Iterable[tuple[int, str, str]], turn: int) -> list[dict[str, Any]]:
    """The request's messages for ``turn``: the prompt, then each earlier turn's reply
    and the results of its tool calls, in the order the reply made them.

    A call whose result is missing (it never ran, as when a reply was cut off by
    ``max_tokens``) is answered with an error, as the API requires an answer for
    every ``tool_use``.
    """
    replies: dict[int, StoredReply] = {}
    results: dict[tuple[int, str], dict[str, Any]] = {}
    for t, part, body in parts:
        if part == ASSISTANT:
            replies[t] = StoredReply.loads(body)
        elif part.startswith(RESULT):
            results[(t, part.removeprefix(RESULT))] = json.loads(body)
    out: list[dict[str, Any]] = [{"role": "user", "content": first_prompt(topic)}]
    for t in range(1, turn):
        reply = replies.get(t)
        if reply is None:
            raise LookupError(f"the transcript has no reply for turn {t}")
        out.append({"role": "assistant", "content": reply.content})
        answers = []
        for block in reply.content:
            if block.get("type") != "tool_use":
                continue
            got = results.get((t, str(block.get("id"))))
            answers.append(
                {
                    "type": "tool_result",
                    "tool_use_id": block.get("id"),
                    "content": str(got["text"]) if got else "the tool call was not run",
                    "is_error": bool(got["is_error"]) if got else True,
                }
            )
        if answers:
            out.append({"role": "user", "content": answers})
    return out

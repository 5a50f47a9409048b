"""The simulated model as a Claude tool-use research agent: a deterministic multi-turn plan.

The ``deep`` strategy runs a loop in which Claude calls the worker's tools until it
writes a report. Durability tests of that loop need a model that calls tools,
in parallel, over a known number of turns, answers each turn from the
conversation alone (so a retried or resumed turn gets the same answer), and bills
every turn like the real API. This module is that model; the worker relies on the
contract below, and a real model given the same tools behaves the same way in
kind, so the worker needs no simulator-specific branches.

**When.** A Messages request that defines client tools (``{"name",
"description", "input_schema"}``, no server ``type``) is an agent turn. Turn
``n`` is the number of assistant messages in the conversation plus one; the plan
has ``N`` turns, the ``llm`` plan's ``agent_turns`` (default 6; ``POST
/_sim/faults {"llm": {"agent_turns": 20}}`` or ``SimConfig(llm=ServicePlan(
agent_turns=20))``).

**The tools it calls** (by name; only those the request defines):

* ``web_search`` -- ``{"query": string}``. Its ``tool_result`` should hold the
  results' URLs (as text or JSON); the agent fetches the URLs it finds there.
* ``fetch_page`` -- ``{"url": string}``: one URL taken from an earlier result.
  Its ``tool_result`` is the page's text, or ``is_error: true`` with the reason
  (refused domain, too large, not text, HTTP error).
* ``record_finding`` -- ``{"claim": string, "source_url": string}``: a sentence
  taken from a page fetched successfully, and that page's URL.

**The plan.** Turn 1 makes two parallel ``web_search`` calls (queries from
:func:`steadfast_dev.sim.content.search_queries` on the topic). Each later turn
records up to two findings from the pages fetched without error and not yet
recorded, then fetches one or two (alternately) URLs from earlier results not yet
fetched, or, when none are left, searches again with the next query: one to
three parallel calls, ``stop_reason: "tool_use"``, after a short text block.
``tool_choice: {"disable_parallel_tool_use": true}`` keeps the first call only;
``tool_choice`` ``any`` and ``tool`` are played as ``auto``.

**The end.** Turn ``N`` and later, ``tool_choice: {"type": "none"}``, a request
whose newest user message has a text block saying "this is your last turn"
(as Claude heeds such a note; ``agent_finishes_when_asked: false`` plays a model
that does not), or a turn with nothing left to call answers ``stop_reason:
"end_turn"`` with a markdown report (the report of :mod:`~steadfast_dev.sim.content`)
citing the pages fetched without error -- or, when none was, the search results'
URLs whose fetch was not refused -- and listing the recorded findings. As in the
real API, a request whose messages hold ``tool_use`` or ``tool_result`` blocks
must define its tools even then.

**Validation** follows the real API (400 ``invalid_request_error``): each
``tool_use`` must be answered by a ``tool_result`` with its id in the next user
message, and a ``tool_result`` must answer a ``tool_use`` of the previous message.

**Faults.** ``bad_json`` on a tool turn sends tool inputs that break their schema
(the required fields missing, the intended input as a truncated JSON string under
``input``), the same streamed or not: the worker must answer it with an error
``tool_result``, as it would for a real model's malformed call. The other fault
kinds behave as on any call; a cut stream stops inside a tool call's JSON deltas
as readily as inside text.

**max_tokens.** Calls are written in order until the output reaches ``max_tokens``:
the call it stops in is streamed up to there (its input JSON cut off, never valid; ``{}``
in a non-streaming answer), those after it are not written, ``stop_reason:
"max_tokens"``.

**Usage.** Input counts tools, the tool-use system prompt, system and every
message (tool results included), with the prompt cache applied as for any
request; output counts the text and each call's name and JSON input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

from steadfast_dev.sim import content, messages, tooluse

WEB_SEARCH: Final = "web_search"
FETCH_PAGE: Final = "fetch_page"
RECORD_FINDING: Final = "record_finding"

#: The tool definitions the plan is written for; a worker may send these as they are.
TOOLS: Final[tuple[Mapping[str, object], ...]] = (
    {
        "name": WEB_SEARCH,
        "description": "Search the web. Returns results with title, url and snippet.",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "The search query."}},
            "required": ["query"],
        },
    },
    {
        "name": FETCH_PAGE,
        "description": "Fetch a web page by URL and return its text.",
        "input_schema": {
            "type": "object",
            "properties": {"url": {"type": "string", "description": "An http(s) URL."}},
            "required": ["url"],
        },
    },
    {
        "name": RECORD_FINDING,
        "description": "Record a finding for the report, with the URL of its source.",
        "input_schema": {
            "type": "object",
            "properties": {
                "claim": {"type": "string", "description": "One sentence the source supports."},
                "source_url": {"type": "string", "description": "The page it came from."},
            },
            "required": ["claim", "source_url"],
        },
    },
)

#: What, in a text block of the newest user message, asks the agent for its report now.
FINISH_CUES: Final = ("this is your last turn", "this is your final turn")
#: The most tool calls one turn makes.
MAX_CALLS: Final = 3
_SENTENCE_RE: Final = re.compile(r"(?<=[.!?])\s+")
_TAG_RE: Final = re.compile(r"<[^>]+>")
_PARAGRAPH_RE: Final = re.compile(r"<p>(.*?)</p>", re.DOTALL | re.IGNORECASE)

Planned = tuple[str, dict[str, object]]


def plays_agent(body: Mapping[str, object]) -> bool:
    """Whether a request is an agent turn (it defines client tools)."""
    return bool(tooluse.client_tools(body))


def topic(body: Mapping[str, object]) -> str:
    """The research topic, from the system prompt and the first user message."""
    raw = body.get("messages")
    first = next(
        (
            content.block_text(m.get("content"))
            for m in (raw if isinstance(raw, list) else [])
            if isinstance(m, Mapping) and m.get("role") == "user"
        ),
        "",
    )
    return content.topic_of(f"{content.block_text(body.get('system'))}\n{first}", first)


def plan_calls(
    conversation: tooluse.Conversation, offered: set[str], subject: str
) -> list[Planned]:
    """The tool calls of this turn, from what earlier turns called and got back."""
    calls: list[Planned] = []
    fetches = conversation.called(FETCH_PAGE)
    if RECORD_FINDING in offered:
        recorded = {str(c.input.get("source_url")) for c in conversation.called(RECORD_FINDING)}
        for call in fetches:
            url = str(call.input.get("url"))
            if call.result and not call.is_error and url not in recorded and len(calls) < 2:
                recorded.add(url)
                calls.append(
                    (RECORD_FINDING, {"claim": claim(call.result, subject), "source_url": url})
                )
    fetched = {str(c.input.get("url")) for c in fetches}
    unfetched = [url for url in conversation.result_urls() if url not in fetched]
    if FETCH_PAGE in offered and unfetched:
        want = 1 + conversation.turn % 2
        calls += [(FETCH_PAGE, {"url": url}) for url in unfetched[:want]]
    elif WEB_SEARCH in offered:
        done = len(conversation.called(WEB_SEARCH))
        more = 2 if done == 0 else 1
        queries = content.search_queries(subject, done + more)[done:]
        calls += [(WEB_SEARCH, {"query": query}) for query in queries]
    return calls[:MAX_CALLS]


def claim(page: str, subject: str) -> str:
    """A sentence of a fetched page worth recording: the first whole, long enough one.

    HTML paragraphs are read when there are any, else the lines of the text, so a
    title or heading never runs into the sentence.
    """
    blocks = _PARAGRAPH_RE.findall(page) or page.splitlines()
    for block in blocks:
        text = " ".join(_TAG_RE.sub(" ", block).split())
        for sentence in _SENTENCE_RE.split(text):
            if len(sentence.split()) >= 8 and len(sentence) <= 300 and sentence[-1] in ".!?":
                return sentence
    return f"The source discusses {subject}."


def asked_to_finish(body: Mapping[str, object]) -> bool:
    """Whether the newest user message asks for the report now: a text block in it
    that says "this is your last (or final) turn"."""
    chat = body.get("messages")
    if not isinstance(chat, list) or not chat or not isinstance(chat[-1], Mapping):
        return False
    newest = chat[-1]
    if newest.get("role") != "user":
        return False
    blocks = newest.get("content")
    if isinstance(blocks, str):
        blocks = [{"type": "text", "text": blocks}]
    if not isinstance(blocks, list):
        return False
    texts = [
        str(b.get("text", "")).lower()
        for b in blocks
        if isinstance(b, Mapping) and b.get("type") == "text"
    ]
    return any(cue in text for text in texts for cue in FINISH_CUES)


def agent_reply(
    body: Mapping[str, object],
    cache: messages.CacheUse,
    *,
    turns: int,
    broken: bool,
    finishes_when_asked: bool = True,
    says: str = "",
    answer: str = "",
    account: messages.InputAccount | None = None,
) -> messages.Reply:
    """The agent's answer to one turn of a tool-use conversation (``says``: a paragraph
    its report repeats, ``ServicePlan.says``; ``answer``: its text, ``ServicePlan.answer``;
    ``account``: its input as counted already, else counted here)."""
    conversation = tooluse.read_conversation(body)
    offered = {str(tool.get("name")) for tool in tooluse.client_tools(body)}
    choice = tooluse.tool_choice(body)
    subject = topic(body)
    planned: list[Planned] = []
    heeds = finishes_when_asked and asked_to_finish(body)
    if choice.get("type") != "none" and conversation.turn < turns and not heeds:
        planned = plan_calls(conversation, offered, subject)
    if choice.get("disable_parallel_tool_use") is True:
        planned = planned[:1]
    account = account or messages.account_input(body)
    limit = body.get("max_tokens")
    budget = limit if isinstance(limit, int) else 4096
    if not planned:
        text = answer or final_report(conversation, subject, says)
        stops = _stop_sequences(body)
        text, stop_reason, stop_sequence = content.truncate(text, budget, stops)
        usage = messages.usage_json(account, cache, max(content.estimate_tokens(text), 1))
        return messages.Reply((), text, stop_reason, stop_sequence, usage)
    text, stop_reason, _ = content.truncate(answer or _preface(planned, subject), budget)
    spent = content.estimate_tokens(text)
    conversation_id = json.dumps(body.get("messages"), sort_keys=True, default=str)
    blocks: list[dict[str, object]] = []
    cut: str | None = None
    for index, (name, tool_input) in enumerate(planned):
        block: dict[str, object] = {
            "type": "tool_use",
            "id": tooluse.tool_use_id(conversation_id, str(conversation.turn), str(index)),
            "name": name,
            "input": _broken_input(tool_input) if broken else tool_input,
        }
        cost = messages.tool_use_tokens(block)
        if spent + cost > budget:
            # As the real API: the output stops where max_tokens is reached, inside the
            # call's input JSON when its name fits.
            stop_reason = "max_tokens"
            room = budget - spent - messages.tool_use_tokens({**block, "input": {}})
            if room > 0:
                whole = json.dumps(block["input"])
                cut = whole[: min(room * 4, len(whole) - 1)]  # a prefix, never the whole
                blocks.append({**block, "input": {}})
                spent = budget
            break
        spent += cost
        blocks.append(block)
    if stop_reason != "max_tokens":
        stop_reason = "tool_use"
    usage = messages.usage_json(account, cache, max(spent, 1))
    return messages.Reply((), text, stop_reason, None, usage, tool_uses=tuple(blocks), cut_json=cut)


def final_report(conversation: tooluse.Conversation, subject: str, says: str = "") -> str:
    """The report of the last turn: cites the pages read, lists the findings recorded."""
    read = [
        str(c.input.get("url"))
        for c in conversation.called(FETCH_PAGE)
        if c.result and not c.is_error
    ]
    refused = {str(c.input.get("url")) for c in conversation.called(FETCH_PAGE) if c.is_error}
    found = [url for url in conversation.result_urls() if url not in refused]
    sources = list(dict.fromkeys(read)) or found[:5]
    cited = f"Topic: {subject}\n" + "\n".join(sources)
    report = content.report_markdown(cited, subject, max_sources=len(sources), says=says)
    findings = [
        (str(c.input.get("claim")), str(c.input.get("source_url")))
        for c in conversation.called(RECORD_FINDING)
        if not c.is_error
    ]
    if not findings:
        return report
    lines = ["## Recorded findings", ""]
    for text, url in findings:
        cite = f" [{sources.index(url) + 1}]" if url in sources else f" ({url})"
        lines.append(f"- {text}{cite}")
    section = "\n".join(lines) + "\n\n"
    if "\n## Sources\n" in report:
        return report.replace("\n## Sources\n", f"\n{section}## Sources\n", 1)
    return f"{report}\n{section}"


def _preface(planned: list[Planned], subject: str) -> str:
    names = [name for name, _ in planned]
    parts = []
    if RECORD_FINDING in names:
        parts.append("Noting what the pages read so far support.")
    if FETCH_PAGE in names:
        count = names.count(FETCH_PAGE)
        parts.append(
            f"Reading {count} of the sources found{'' if count == 1 else ', in parallel'}."
        )
    if WEB_SEARCH in names:
        parts.append(f"Searching for sources on {subject}.")
    return " ".join(parts)


def _broken_input(tool_input: Mapping[str, object]) -> dict[str, object]:
    whole = json.dumps(tool_input)
    return {"input": whole[: max(1, len(whole) // 2)]}


def _stop_sequences(body: Mapping[str, object]) -> list[str]:
    raw = body.get("stop_sequences")
    return [s for s in raw if isinstance(s, str)] if isinstance(raw, list) else []

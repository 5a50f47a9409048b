"""The baseline of the deep-agent benchmarks: a tool-use loop as Temporal's samples write it.

A plain workflow keeps the conversation in its own state and passes all of it to
an LLM activity every turn; the tool calls a reply asks for run concurrently as
activities (``asyncio.gather``) and their results are appended to the
conversation; ``record_finding`` is answered in the workflow, as Steadfast does.
No budget, no status, no stream, no report store, no heartbeats: what is left is
what any Temporal agent loop must do, so a Steadfast deep run on the same server
and simulator, minus this, is what Steadfast adds. Its history carries the whole
conversation on every turn (the "without the offload" figure).

The tools are Steadfast's own (the simulator's search endpoint, and
:func:`steadfast_worker.fetching.fetch_text` over its pages), so both loops send
the model the same conversation. The worker is ``bench/deep_bare_worker.py``.

The activities are ``async def``. With ``BARE_CLIENTS=async`` (the default) they
call the asynchronous Anthropic and HTTP clients, as a careful sample does; with
``BARE_CLIENTS=sync`` the model and the search go through the *synchronous*
clients, as the seed wrote its activities and as :mod:`handwritten` does, so a
slow answer blocks the worker's event loop. ``fetch_page`` stays asynchronous in
both (Steadfast's page reader takes an asynchronous client), which makes the
blocking baseline a little stronger than the seed's, not weaker.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import anthropic
    import httpx

    from steadfast_contract.models import FetchRules
    from steadfast_worker import fetching, transcript

WORKFLOW_NAME = "BareDeepWorkflow"
#: Where the activities find the simulator (configuration from the environment,
#: never from activity inputs).
SIM_URL_ENV = "BARE_SIM_URL"
SIM_API_KEY_ENV = "BARE_SIM_API_KEY"
#: ``async`` (the default) or ``sync``: which clients the model and the search use.
CLIENTS_ENV = "BARE_CLIENTS"


@dataclass
class LlmRequest:
    model: str
    max_tokens: int
    messages: list[dict[str, Any]]
    final: bool = False


@dataclass
class LlmReply:
    content: list[dict[str, Any]]
    stop_reason: str


@dataclass
class BareDeepInput:
    topic: str
    max_turns: int = 20
    model: str = "claude-sonnet-4-6"
    max_tokens: int = 4000


@dataclass
class BareDeepResult:
    report: str
    turns: int
    tool_calls: int
    findings: list[str] = field(default_factory=list)


class BareActivities:
    """One Anthropic client and one HTTP client per worker process."""

    def __init__(self) -> None:
        self.sim = os.environ[SIM_URL_ENV]
        key = os.environ[SIM_API_KEY_ENV]
        self.blocking = os.environ.get(CLIENTS_ENV, "async") == "sync"
        self.llm = anthropic.AsyncAnthropic(api_key=key, base_url=self.sim, max_retries=0)
        self.llm_sync = anthropic.Anthropic(api_key=key, base_url=self.sim, max_retries=0)
        self.http = httpx.AsyncClient(timeout=30)
        self.http_sync = httpx.Client(timeout=30)

    @activity.defn(name="bare_llm")
    async def llm_turn(self, req: LlmRequest) -> LlmReply:
        ask: dict[str, Any] = {
            "model": req.model,
            "max_tokens": req.max_tokens,
            "system": transcript.SYSTEM,
            "tools": list(transcript.TOOLS),
            "tool_choice": {"type": "none"} if req.final else {"type": "auto"},
            "messages": req.messages,
        }
        if self.blocking:
            reply = self.llm_sync.messages.create(**ask)
        else:
            reply = await self.llm.messages.create(**ask)
        content = [b.model_dump(mode="json", exclude_none=True) for b in reply.content]
        return LlmReply(content, reply.stop_reason or "")

    @activity.defn(name="bare_web_search")
    async def web_search(self, query: str) -> str:
        params: dict[str, str | int] = {"q": query, "count": 5}
        if self.blocking:
            got = self.http_sync.get(f"{self.sim}/search", params=params)
        else:
            got = await self.http.get(f"{self.sim}/search", params=params)
        got.raise_for_status()
        results = got.json().get("results", [])
        return json.dumps(
            [{"title": r["title"], "url": r["url"], "snippet": r["snippet"]} for r in results]
        )

    @activity.defn(name="bare_fetch_page")
    async def fetch_page(self, url: str) -> str:
        try:
            # The simulator serves its pages on loopback, read only from a host named so.
            rules = FetchRules(allow_private_hosts=[urlsplit(self.sim).netloc])
            final, text = await fetching.fetch_text(self.http, url, rules)
        except fetching.FetchRefused as refused:
            return f"refused: {refused}"
        return f"URL: {final}\n\n{text}"

    def all(self) -> list[Any]:
        return [self.llm_turn, self.web_search, self.fetch_page]


TIMEOUT = timedelta(seconds=120)


@workflow.defn(name=WORKFLOW_NAME)
class BareDeepWorkflow:
    @workflow.run
    async def run(self, inp: BareDeepInput) -> BareDeepResult:
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": transcript.first_prompt(inp.topic)}
        ]
        findings: list[str] = []
        tool_calls = 0
        for n in range(1, inp.max_turns + 1):
            final = n >= inp.max_turns
            reply = await workflow.execute_activity(
                "bare_llm",
                LlmRequest(inp.model, inp.max_tokens, messages, final),
                result_type=LlmReply,
                start_to_close_timeout=TIMEOUT,
            )
            messages.append({"role": "assistant", "content": reply.content})
            uses = [b for b in reply.content if b.get("type") == "tool_use"]
            if final or not uses:
                text = "".join(b.get("text", "") for b in reply.content if b.get("type") == "text")
                return BareDeepResult(text, n, tool_calls, findings)
            tool_calls += len(uses)
            outputs = await asyncio.gather(*(self._tool(b, findings) for b in uses))
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": b["id"], "content": out}
                        for b, out in zip(uses, outputs, strict=True)
                    ],
                }
            )
        raise AssertionError("unreachable: the last turn returns")

    async def _tool(self, block: dict[str, Any], findings: list[str]) -> str:
        name, args = block.get("name"), block.get("input") or {}
        if name == "record_finding":
            findings.append(str(args.get("claim", "")))
            return f"recorded finding {len(findings)}"
        if name == "web_search":
            activity_name, arg = "bare_web_search", str(args.get("query", ""))
        elif name == "fetch_page":
            activity_name, arg = "bare_fetch_page", str(args.get("url", ""))
        else:
            return f"no tool {name!r}"
        out: str = await workflow.execute_activity(
            activity_name, arg, result_type=str, start_to_close_timeout=TIMEOUT
        )
        return out

"""The baseline of the Temporal-cost benchmark: the research run written by hand.

The seed's four activities -- generate queries (LLM), search, write the report
(LLM), save it -- in one workflow the way Temporal's samples teach it: one
dataclass in and out, ``execute_activity`` per step, a retry policy, nothing
else. No budget, no status query, no stream, no memo, no mail. The activities
are ``async def``; with ``HAND_CLIENTS=sync`` (as the seed wrote them) they call
the *synchronous* Anthropic and HTTP clients, so a slow model blocks the worker's
event loop, and with ``HAND_CLIENTS=async`` the asynchronous ones, as a careful
sample does -- the stronger baseline. Its worker is ``bench/handwritten_worker.py``.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

WORKFLOW_NAME = "HandWrittenResearch"
MODEL = "claude-sonnet-4-6"
#: How many LLM calls one run makes (queries, report): the per-call denominator.
LLM_CALLS = 2


@dataclass
class HandInput:
    topic: str


@dataclass
class HandReport:
    topic: str
    queries: list[str] = field(default_factory=list)
    markdown: str = ""
    report_id: int = 0


def _async() -> bool:
    return os.environ.get("HAND_CLIENTS", "sync") == "async"


@functools.cache
def _llm() -> Any:
    """One client per worker process, as a sample would keep it."""
    import anthropic

    kind = anthropic.AsyncAnthropic if _async() else anthropic.Anthropic
    return kind(
        base_url=os.environ["HAND_LLM_URL"], api_key=os.environ["HAND_LLM_KEY"], max_retries=0
    )


@functools.cache
def _http() -> Any:
    import httpx

    return httpx.AsyncClient(timeout=30) if _async() else httpx.Client(timeout=30)


async def _ask(prompt: str) -> str:
    message = _llm().messages.create(
        model=MODEL, max_tokens=2000, messages=[{"role": "user", "content": prompt}]
    )
    if _async():
        message = await message
    return "".join(getattr(block, "text", "") for block in message.content)


async def _get(query: str) -> Any:
    response = _http().get(os.environ["HAND_SEARCH_URL"], params={"q": query, "count": 5})
    if _async():
        response = await response
    response.raise_for_status()
    return response.json()


@activity.defn
async def generate_queries(topic: str) -> list[str]:
    text = await _ask(f"Write three web search queries, as a JSON list of strings, about: {topic}")
    try:
        parsed = json.loads(text[text.index("[") : text.rindex("]") + 1])
        queries = [str(q) for q in parsed]
    except ValueError:
        queries = [line.strip() for line in text.splitlines() if line.strip()]
    return queries[:3] or [topic]


@activity.defn
async def search(queries: list[str]) -> list[str]:
    snippets: list[str] = []
    for q in queries:
        data = await _get(q)
        items = data.get("results", []) if isinstance(data, dict) else data
        snippets += [f"{i.get('title', '')}: {i.get('snippet', '')}" for i in items]
    return snippets


@activity.defn
async def write_report(topic: str, snippets: list[str]) -> str:
    results = "\n".join(snippets)
    return await _ask(f"Write a research report on {topic} from these results:\n{results}")


@activity.defn
async def save_report(topic: str, markdown: str) -> int:
    with sqlite3.connect(os.environ["HAND_DB"]) as db:
        db.execute("create table if not exists reports (topic text, markdown text)")
        cursor = db.execute("insert into reports values (?, ?)", (topic, markdown))
        return int(cursor.lastrowid or 0)


@workflow.defn(name=WORKFLOW_NAME)
class HandWrittenResearch:
    @workflow.run
    async def run(self, inp: HandInput) -> HandReport:
        llm = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=5)
        timeout = timedelta(minutes=5)
        queries = await workflow.execute_activity(
            generate_queries, inp.topic, start_to_close_timeout=timeout, retry_policy=llm
        )
        snippets = await workflow.execute_activity(search, queries, start_to_close_timeout=timeout)
        markdown = await workflow.execute_activity(
            write_report,
            args=[inp.topic, snippets],
            start_to_close_timeout=timeout,
            retry_policy=llm,
        )
        report_id = await workflow.execute_activity(
            save_report, args=[inp.topic, markdown], start_to_close_timeout=timeout
        )
        return HandReport(inp.topic, queries, markdown, report_id)

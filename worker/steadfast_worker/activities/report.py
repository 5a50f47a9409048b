"""Activity ``write_report``: analyse the search results and write the report, streamed.

The report is the long call of a run (tens of seconds with a real model), so it
streams: text chunks are published to the workflow's stream
(``temporalio.contrib.workflow_streams``, topic
:data:`~steadfast_contract.models.REPORT_TOPIC`) for ``steadfast run --follow``,
and every chunk is also a heartbeat, so a worker that dies mid-report is noticed
within the heartbeat timeout and the call restarts on another worker.

A stream that breaks after tokens were produced was still billed; its estimated
cost is carried (heartbeat details) into the next attempt and counted as failed
spend, so the run's cost and the retry-cost metric stay honest. The estimate is
heartbeated as the stream goes, so an attempt lost with its worker leaves it too,
and the next attempt counts it. Each attempt checks the run's budget, that spend
included, before it sends its request, and reserves it from the day's budget.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from anthropic.lib.streaming import AsyncMessageStream
from temporalio import activity
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from steadfast_contract import budget, pricing
from steadfast_contract.activities import (
    WRITE_REPORT,
    LlmCall,
    SearchResult,
    WriteReportInput,
    WriteReportOutput,
)
from steadfast_contract.models import REPORT_TOPIC, ReportChunk
from steadfast_contract.pricing import Usage
from steadfast_worker import llm
from steadfast_worker.activities import daybudget
from steadfast_worker.activities.base import (
    ActivityBase,
    Carried,
    FailureDetailsFactory,
    Heartbeater,
    ensure_affordable,
)

SYSTEM = (
    "You are a careful research analyst. Write a concise markdown report with a "
    "summary, key findings and sources. Cite sources by URL and do not invent any."
)
#: Publish in pieces of about this many characters, or at least this often, so a
#: follower sees steady progress without a signal per token.
CHUNK_CHARS = 256
CHUNK_SECONDS = 0.25


def prompt(topic: str, results: list[SearchResult]) -> str:
    lines = ["Write a research report on the topic below using these search results.", ""]
    for i, r in enumerate(results, 1):
        lines.append(f"{i}. {r.title} - {r.url}")
        if r.snippet:
            lines.append(f"   {r.snippet}")
    lines += ["", f"Topic: {topic}"]
    return "\n".join(lines)


def prompt_chars(topic: str, results: list[SearchResult]) -> int:
    """Size of the prompt the workflow budgets for (must match :func:`prompt`)."""
    return len(prompt(topic, results)) + len(SYSTEM)


class ReportActivities(ActivityBase):
    @activity.defn(name=WRITE_REPORT)
    async def write_report(self, inp: WriteReportInput) -> WriteReportOutput:
        async with self.tracked(WRITE_REPORT, billed=True, model=inp.model) as beat:
            return await self._write(inp, beat.state, beat)

    async def _write(
        self, inp: WriteReportInput, carried: Carried, beat: Heartbeater
    ) -> WriteReportOutput:
        info = activity.info()
        price = pricing.lookup(inp.model, inp.pricing)
        publisher = WorkflowStreamClient.from_within_activity(
            batch_interval=timedelta(seconds=CHUNK_SECONDS)
        )
        topic = publisher.topic(REPORT_TOPIC, type=ReportChunk)
        text = ""
        pending = ""
        last_publish = time.monotonic()
        opened: AsyncMessageStream[None] | None = None
        prompt_tokens = budget.estimate_tokens(prompt_chars(inp.topic, inp.results))
        reserve = budget.reserve_usd(inp.max_tokens, prompt_tokens, price)
        ensure_affordable(inp.budget, carried, reserve)
        key = daybudget.request_key()
        spent = FailureDetailsFactory(carried)()
        ledger = await daybudget.reserve_day(inp.budget, key, reserve, spent)
        carried.inflight_request, carried.inflight_ledger = key, ledger or ""
        async with publisher:
            try:
                async with self.llm_client().messages.stream(
                    model=inp.model,
                    max_tokens=inp.max_tokens,
                    system=[
                        {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}
                    ],
                    messages=[{"role": "user", "content": prompt(inp.topic, inp.results)}],
                    extra_headers={
                        llm.REQUEST_KEY_HEADER: f"{info.workflow_id}/{info.activity_id}"
                    },
                ) as stream:
                    opened = stream
                    async for event in stream:
                        if event.type != "text":
                            continue
                        pending += event.text
                        now = time.monotonic()
                        if len(pending) >= CHUNK_CHARS or now - last_publish >= CHUNK_SECONDS:
                            topic.publish(ReportChunk(info.attempt, len(text), pending))
                            text += pending
                            pending = ""
                            last_publish = now
                            carried.progress = len(text)
                            # Billed so far, should this worker die before the end.
                            so_far = self._partial_usage(started_usage(stream), text)
                            carried.in_flight(so_far, pricing.cost_usd(so_far, price))
                            beat.beat()
                    final = await stream.get_final_message()
            except BaseException as exc:
                carried.in_flight(Usage(), 0.0)  # counted here, not by the next attempt
                partial = self._partial_usage(started_usage(opened), text + pending)
                cost = pricing.cost_usd(partial, price)
                if cost:
                    carried.failed_cost_usd += cost
                    self.metrics.record_llm(self.labels, inp.model, partial, cost)
                    self.metrics.record_retry_cost(self.labels, inp.model, cost)
                if not isinstance(exc, asyncio.CancelledError):
                    carried.inflight_request = carried.inflight_ledger = ""
                    await daybudget.settle_day(ledger, key, cost)
                raise
            if pending:
                topic.publish(ReportChunk(info.attempt, len(text), pending))
                text += pending
            # Not ``force_flush``: on Python 3.11 a flush wake-up racing the
            # client's exit cancels into asyncio.wait_for's lost-cancellation
            # bug and the exit hangs. An explicit flush has no such race.
            await publisher.flush()
        usage = llm.usage_of(final.usage)
        cost = pricing.cost_usd(usage, price)
        carried.in_flight(usage, cost)  # billed in full, should the worker die right now
        await daybudget.settle_day(ledger, key, cost)
        carried.inflight_request = carried.inflight_ledger = ""
        carried.calls += 1
        self.metrics.record_llm(self.labels, inp.model, usage, cost)
        markdown = llm.text_of(final)
        return WriteReportOutput(
            markdown=markdown,
            llm=LlmCall(inp.model, usage, cost, carried.failed_cost_usd, carried.calls),
            attempt=info.attempt,
            stop_reason=final.stop_reason or "",
        )

    @staticmethod
    def _partial_usage(started: Usage | None, produced: str) -> Usage:
        """What a cut-off stream was billed: its input, and the output seen so far."""
        if started is None:
            return Usage()
        out = budget.estimate_tokens(len(produced)) - budget.OVERHEAD_TOKENS if produced else 0
        return Usage(
            input_tokens=started.input_tokens,
            output_tokens=max(out, 0),
            cache_read_tokens=started.cache_read_tokens,
            cache_write_tokens=started.cache_write_tokens,
        )


def started_usage(stream: AsyncMessageStream[None] | None) -> Usage | None:
    """The input usage ``message_start`` reported, if the stream got that far."""
    if stream is None:
        return None
    try:
        message = stream.current_message_snapshot
    except Exception:  # no message_start yet: nothing was billed
        return None
    return llm.usage_of(message.usage)

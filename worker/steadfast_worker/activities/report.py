"""Activity ``write_report``: analyse the search results and write the report, streamed.

The report is the long call of a run (tens of seconds with a real model), so it
streams (:mod:`~steadfast_worker.activities.streaming`): text chunks go to the
workflow's stream for ``steadfast run --follow``, and every chunk is also a
heartbeat carrying the spend so far, so a worker that dies mid-report is noticed
within the heartbeat timeout, the call restarts on another worker, and what the
cut-off stream was billed counts as failed spend. Each attempt checks the run's
budget, that spend included, before it sends its request, and reserves it from
the day's budget.
"""

from __future__ import annotations

from dataclasses import replace

from temporalio import activity

from steadfast_contract import budget, pricing, stops
from steadfast_contract.activities import (
    WRITE_REPORT,
    LlmCall,
    SearchResult,
    WriteReportInput,
    WriteReportOutput,
)
from steadfast_worker import llm
from steadfast_worker.activities.base import ActivityBase, reserve_request, settle_request
from steadfast_worker.activities.heartbeat import Carried, Heartbeater
from steadfast_worker.activities.streaming import stream_message

SYSTEM = (
    "You are a careful research analyst. Write a concise markdown report with a "
    "summary, key findings and sources. Cite sources by URL and do not invent any."
)


def prompt(topic: str, results: list[SearchResult]) -> str:
    lines = ["Write a research report on the topic below using these search results.", ""]
    for i, r in enumerate(results, 1):
        lines.append(f"{i}. {r.title} - {r.url}")
        if r.snippet:
            lines.append(f"   {r.snippet}")
    lines += ["", f"Topic: {topic}"]
    return "\n".join(lines)


def prompt_sizes(topic: str, results: list[SearchResult]) -> tuple[int, int]:
    """Size of the prompt the budget reserves for (must match :func:`prompt`): in
    characters as the budget counts them (:func:`~steadfast_contract.budget.token_chars`),
    and its plain length, which runs recorded before ``TOKENS_BY_SCRIPT_PATCH``
    reserved for, and replay so."""
    text = prompt(topic, results)
    return budget.token_chars(text) + budget.token_chars(SYSTEM), len(text) + len(SYSTEM)


class ReportActivities(ActivityBase):
    @activity.defn(name=WRITE_REPORT)
    async def write_report(self, inp: WriteReportInput) -> WriteReportOutput:
        async with self.tracked(
            WRITE_REPORT, billed=True, model=inp.model, run_budget=inp.budget
        ) as beat:
            return await self._write(inp, beat.state, beat)

    async def _write(
        self, inp: WriteReportInput, carried: Carried, beat: Heartbeater
    ) -> WriteReportOutput:
        info = activity.info()
        price = pricing.lookup(inp.model, inp.pricing)
        prompt_tokens = budget.estimate_tokens(prompt_sizes(inp.topic, inp.results)[0])
        reserve = budget.reserve_usd(inp.max_tokens, prompt_tokens, price)
        ledger, key = await reserve_request(inp.budget, carried, reserve)
        streamed = await stream_message(
            self,
            beat,
            price=price,
            ledger=(ledger, key),
            model=inp.model,
            max_tokens=inp.max_tokens,
            system=[{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": prompt(inp.topic, inp.results)}],
            extra_headers={llm.REQUEST_KEY_HEADER: f"{info.workflow_id}/{info.activity_id}"},
        )
        final = streamed.message
        usage = llm.usage_of(final.usage)
        cost = pricing.cost_usd(usage, price)
        carried.in_flight(usage, cost)  # billed in full, should the worker die right now
        await settle_request(carried, ledger, key, cost)
        carried.calls += 1
        self.metrics.record_llm(self.labels, inp.model, usage, cost)
        refusal = llm.refusal_of(final)
        if refusal is not None:
            raise self.refused(carried, inp.model, key, cost, "to write the report", refusal)
        markdown = llm.text_of(final)
        if stops.is_cut_short(final.stop_reason):
            markdown += stops.cut_note(final.stop_reason or "", inp.max_tokens)
        markdown = stops.fit_report(markdown)
        return WriteReportOutput(
            markdown=markdown,
            llm=LlmCall(inp.model, usage, cost, carried.failed_cost_usd, carried.calls),
            attempt=info.attempt,
            stop_reason=final.stop_reason or "",
            tail=replace(streamed.tail, text="") if streamed.tail else None,  # in markdown
        )

"""The ``pipeline`` strategy: the seed's fixed steps -- queries, searches, one report.

Deterministic workflow code, run by :class:`~steadfast_worker.workflows.ResearchWorkflow`
when ``spec.research.strategy`` is ``pipeline`` (the default): two LLM calls per
run, a few concurrent searches between them. Like :mod:`.deep` it is part of the
workflow class and uses its helpers (the budget gate, accounting, status) directly.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from steadfast_contract import activities as act
    from steadfast_contract import budget
    from steadfast_contract.models import Phase, Pricing, ResearchInput
    from steadfast_worker import accounting
    from steadfast_worker.activities.report import prompt_chars as report_prompt_chars

if TYPE_CHECKING:
    from steadfast_worker.workflows import ResearchWorkflow

QUERY_PROMPT_CHARS = 400


async def research(wf: ResearchWorkflow, inp: ResearchInput, price: Pricing) -> str:
    """Queries, searches, one report: the seed's fixed steps; the report's markdown."""
    s = inp.settings

    wf._enter(Phase.GENERATING_QUERIES)
    queries = await wf._gate.step(
        budget.reserve_usd(s.max_tokens, budget.estimate_tokens(QUERY_PROMPT_CHARS), price),
        lambda: wf._activity(
            act.GENERATE_QUERIES,
            act.GenerateQueriesInput(
                inp.topic,
                s.query_count,
                s.model,
                s.max_tokens,
                s.pricing,
                s.max_output_reasks,
                wf._gate.run_budget(),
            ),
            act.GenerateQueriesOutput,
            s.retry_policies.llm,
            act.LLM_START_TO_CLOSE,
        ),
    )
    wf._account_llm(queries.llm, queries.attempt, act.GENERATE_QUERIES)

    wf._enter(Phase.SEARCHING)
    results = await _search(wf, inp, queries.queries, price)

    wf._enter(Phase.WRITING)
    report = await wf._gate.step(
        budget.reserve_usd(
            s.max_tokens, budget.estimate_tokens(report_prompt_chars(inp.topic, results)), price
        ),
        lambda: wf._activity(
            act.WRITE_REPORT,
            act.WriteReportInput(
                inp.topic, results, s.model, s.max_tokens, s.pricing, wf._gate.run_budget()
            ),
            act.WriteReportOutput,
            s.retry_policies.llm,
            act.LLM_START_TO_CLOSE,
        ),
    )
    wf._publish_tail(report.tail, report.markdown)
    wf._account_llm(report.llm, report.attempt, act.WRITE_REPORT)
    markdown: str = report.markdown
    return markdown


async def _search(
    wf: ResearchWorkflow, inp: ResearchInput, queries: list[str], price: Pricing
) -> list[act.SearchResult]:
    s = inp.settings
    uses_llm = s.search_provider == "anthropic-web-search"
    if uses_llm:
        per_call = budget.reserve_usd(
            s.max_tokens, budget.estimate_tokens(QUERY_PROMPT_CHARS), price, web_searches=1
        )
        # The searches run concurrently, so all of them must fit at once.
        await wf._gate.afford(per_call * len(queries))
    calls = [
        wf._activity(
            act.WEB_SEARCH,
            act.WebSearchInput(
                q, s.search_max_results, s.model, s.max_tokens, s.pricing, wf._gate.run_budget()
            ),
            act.WebSearchOutput,
            s.retry_policies.search,
            act.IO_START_TO_CLOSE,
        )
        for q in queries
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    seen: set[str] = set()
    results: list[act.SearchResult] = []
    failed: list[ActivityError] = []
    for outcome in outcomes:
        if isinstance(outcome, ActivityError):
            failed.append(outcome)
            wf._account_failure(outcome)
            continue
        if isinstance(outcome, BaseException):
            raise outcome
        accounting.add_attempts(wf._status, act.WEB_SEARCH, outcome.attempt)
        if outcome.llm is not None:
            wf._account_llm(outcome.llm, 1, act.WEB_SEARCH)
        for r in outcome.results:
            if r.url not in seen:
                seen.add(r.url)
                results.append(r)
    if failed and not results:
        # Nothing to write from: the run fails with the first search's reason.
        raise failed[0]
    if failed:
        wf._status.message = f"{len(failed)} of {len(queries)} searches failed"
    return results

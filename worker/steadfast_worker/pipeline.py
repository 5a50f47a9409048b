"""The ``pipeline`` strategy: the seed's fixed steps -- queries, searches, one report.

Deterministic workflow code, run by :class:`~steadfast_worker.workflows.ResearchWorkflow`
when ``spec.research.strategy`` is ``pipeline`` (the default): two LLM calls per
run, a few concurrent searches between them. Like :mod:`.deep` it is part of the
workflow class and uses its helpers (the budget gate, accounting, status) directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from steadfast_contract import activities as act
    from steadfast_contract import budget, stops
    from steadfast_contract.models import (
        SEARCH_STEP_PATCH,
        SEARCH_STEP_SHAPE,
        Phase,
        Pricing,
        ResearchInput,
    )
    from steadfast_worker import accounting, failures
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
    try:
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
    except ActivityError as err:
        if failures.refused(err):
            why = "the model declined to write the report"
            raise failures.RefusedError(err, _sources(inp.topic, results, why)) from None
        raise
    except failures.BudgetStopError as stop:
        stop.gathered = _sources(inp.topic, results, "the run's budget ran out before the report")
        raise
    wf._publish_tail(report.tail, report.markdown)
    wf._account_llm(report.llm, report.attempt, act.WRITE_REPORT)
    if stops.is_cut_short(report.stop_reason):
        wf._status.message = stops.cut_message(report.stop_reason, s.max_tokens)
    markdown: str = report.markdown
    return markdown


def _sources(topic: str, results: list[act.SearchResult], why: str) -> str:
    """The unfinished report of a run stopped before writing (``why``): its sources."""
    sources = ((r.title, r.url) for r in results)
    return stops.unfinished_report(topic, why, sources, "Sources found")


def _search_step_shape(inp: ResearchInput) -> bool:
    """Whether this run searches the shape-2 way: all ``http`` searches in one
    ``web_searches`` activity; a search through the model that a budget refused
    paused and asked again, as an LLM step is.

    Its input must say shape 2, and the ``search-step`` marker must agree: a worker
    of older code ignores the shape and searches the older way, and a run it searched
    for replays that way here (docs/design.md, rollouts).
    """
    return inp.settings.shape >= SEARCH_STEP_SHAPE and workflow.patched(SEARCH_STEP_PATCH)


async def _search(
    wf: ResearchWorkflow, inp: ResearchInput, queries: list[str], price: Pricing
) -> list[act.SearchResult]:
    s = inp.settings
    uses_llm = s.search_provider == "anthropic-web-search"
    shape2 = _search_step_shape(inp)
    if shape2 and not uses_llm:
        step: act.WebSearchesOutput = await wf._activity(
            act.WEB_SEARCHES,
            act.WebSearchesInput(queries, s.search_max_results),
            act.WebSearchesOutput,
            s.retry_policies.search,
            act.IO_START_TO_CLOSE,
        )
        for failure in step.failures:
            accounting.add_failure(wf._status, {"attempt": failure.attempt}, act.WEB_SEARCH)
        for answer in step.searches:
            accounting.add_attempts(wf._status, act.WEB_SEARCH, answer.attempt)
        return _merged(wf, step.searches, len(step.failures), len(queries))

    def ask(q: str) -> Awaitable[act.WebSearchOutput]:
        return wf._activity(
            act.WEB_SEARCH,
            act.WebSearchInput(
                q, s.search_max_results, s.model, s.max_tokens, s.pricing, wf._gate.run_budget()
            ),
            act.WebSearchOutput,
            s.retry_policies.search,
            act.IO_START_TO_CLOSE,
        )

    if uses_llm:
        per_call = wf._gate.search_reserve(
            s.max_tokens, budget.estimate_tokens(QUERY_PROMPT_CHARS), price
        )
        if shape2:
            outcomes = await _granted_searches(wf, queries, per_call, ask)
        else:
            # The searches run concurrently, so all of them must fit at once.
            await wf._gate.afford(per_call * len(queries))
            outcomes = await asyncio.gather(*map(ask, queries), return_exceptions=True)
    else:
        outcomes = await asyncio.gather(*map(ask, queries), return_exceptions=True)
    answers: list[act.WebSearchOutput] = []
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
        answers.append(outcome)
    results = _merged(wf, answers, len(failed), len(queries))
    if failed and not results:
        # Nothing to write from: the run fails with the first search's reason.
        raise failed[0]
    return results


async def _granted_searches(
    wf: ResearchWorkflow,
    queries: list[str],
    per_call: float,
    ask: Callable[[str], Awaitable[act.WebSearchOutput]],
) -> list[act.WebSearchOutput | BaseException]:
    """Searches through the model, each a paid request: the ones a budget refused (the
    run's, or the day's ledger) wait in ``AwaitingBudget`` for it, as an LLM step does,
    and are asked again; every other outcome is kept as it came."""
    outcomes: dict[int, act.WebSearchOutput | BaseException] = {}
    pending = list(range(len(queries)))
    while pending:
        # They run concurrently, so all of them must fit at once.
        await wf._gate.afford(per_call * len(pending))
        batch = await asyncio.gather(*(ask(queries[i]) for i in pending), return_exceptions=True)
        refused: list[tuple[int, ActivityError]] = []
        for i, outcome in zip(pending, batch, strict=True):
            if isinstance(outcome, ActivityError) and failures.budget_refusal(outcome):
                refused.append((i, outcome))
            else:
                outcomes[i] = outcome
        for _, err in refused[1:]:
            wf._account_failure(err)
        if refused:
            await wf._gate.refused(refused[0][1])  # accounts it, and pauses
        pending = [i for i, _ in refused]
    return [outcomes[i] for i in range(len(queries))]


def _merged(
    wf: ResearchWorkflow, answers: list[act.WebSearchOutput], failed: int, queries: int
) -> list[act.SearchResult]:
    """The answers' results, each address once, in order; the status says what failed."""
    seen: set[str] = set()
    results: list[act.SearchResult] = []
    for answer in answers:
        for r in answer.results:
            if r.url not in seen:
                seen.add(r.url)
                results.append(r)
    if failed:
        wf._status.message = f"{failed} of {queries} searches failed"
    return results

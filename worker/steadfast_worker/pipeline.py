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
        SEARCHES_COUNTED_PATCH,
        TOKENS_BY_SCRIPT_PATCH,
        Phase,
        Pricing,
        ResearchInput,
    )
    from steadfast_worker import accounting, failures
    from steadfast_worker.activities.report import prompt_sizes as report_prompt_sizes

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
                s.max_tokens, budget.estimate_tokens(_report_chars(inp.topic, results)), price
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
        if failures.cancelled(err):
            why = "the run was cancelled while its report was written"
            raise failures.CancelledKeepingError(err, _sources(inp.topic, results, why)) from None
        why = f"the report could not be written: {failures.describe(err)[1]}"
        raise failures.StepFailedError(err, _sources(inp.topic, results, why)) from None
    except failures.BudgetStopError as stop:
        stop.gathered = _sources(inp.topic, results, f"{stop.which} ran out before the report")
        raise
    wf._publish_tail(report.tail, report.markdown)
    wf._account_llm(report.llm, report.attempt, act.WRITE_REPORT)
    if stops.is_cut_short(report.stop_reason):
        wf._status.message = stops.cut_message(report.stop_reason, s.max_tokens)
    markdown: str = report.markdown
    return markdown


def _report_chars(topic: str, results: list[act.SearchResult]) -> int:
    """The report prompt's size as the budget counts it: a character outside ASCII as
    a token of its own. Runs recorded before that counted every character as a quarter
    of a token, and replay so (``TOKENS_BY_SCRIPT_PATCH``, asked only where the two
    counts differ, so a run with ASCII results records no marker)."""
    chars, plain = report_prompt_sizes(topic, results)
    if chars != plain and not workflow.patched(TOKENS_BY_SCRIPT_PATCH):
        return plain
    return chars


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

    counted: set[int] = set()
    if uses_llm:
        per_call = wf._gate.search_reserve(
            s.max_tokens, budget.estimate_tokens(QUERY_PROMPT_CHARS), price
        )
        if shape2:
            outcomes, counted = await _granted_searches(wf, inp.topic, queries, per_call, ask)
        else:
            # The searches run concurrently, so all of them must fit at once.
            await wf._gate.afford(per_call * len(queries))
            outcomes = await asyncio.gather(*map(ask, queries), return_exceptions=True)
    else:
        outcomes = await asyncio.gather(*map(ask, queries), return_exceptions=True)
    answers: list[act.WebSearchOutput] = []
    failed: list[ActivityError] = []
    for i, outcome in enumerate(outcomes):
        taken = _count(wf, outcome, account=i not in counted)
        if isinstance(taken, ActivityError):
            failed.append(taken)
        else:
            answers.append(taken)
    results = _merged(wf, answers, len(failed), len(queries))
    if failed and not results:
        # Nothing to write from: the run fails with the first search's reason.
        raise failed[0]
    return results


Outcome = act.WebSearchOutput | BaseException


def _count(
    wf: ResearchWorkflow, outcome: Outcome, *, account: bool = True
) -> act.WebSearchOutput | ActivityError:
    """One search's outcome, an answer or a failed search (anything else is raised),
    accounted in the run's status unless it already is (``account``)."""
    if isinstance(outcome, ActivityError):
        if account:
            wf._account_failure(outcome)
        return outcome
    if isinstance(outcome, BaseException):
        raise outcome
    if account:
        accounting.add_attempts(wf._status, act.WEB_SEARCH, outcome.attempt)
        if outcome.llm is not None:
            wf._account_llm(outcome.llm, 1, act.WEB_SEARCH)
    return outcome


async def _granted_searches(
    wf: ResearchWorkflow,
    topic: str,
    queries: list[str],
    per_call: float,
    ask: Callable[[str], Awaitable[act.WebSearchOutput]],
) -> tuple[list[Outcome], set[int]]:
    """Searches through the model, each a paid request: the ones a budget refused (the
    run's, or the day's ledger) wait in ``AwaitingBudget`` for it, as an LLM step does,
    and are asked again; every other outcome is kept as it came. Returns the outcomes
    and which of them are accounted already: those granted before a pause are counted
    before it, so the pause (and the raise that ends it) sees what the run spent, and a
    pause that runs out keeps their results as the run's unfinished report. Runs
    recorded before that count them after (``SEARCHES_COUNTED_PATCH``)."""
    outcomes: dict[int, Outcome] = {}
    counted: set[int] = set()
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
        if refused and workflow.patched(SEARCHES_COUNTED_PATCH):
            for i in sorted(outcomes.keys() - counted):
                _count(wf, outcomes[i])
                counted.add(i)
        for _, err in refused[1:]:
            wf._account_failure(err)
        if refused:
            try:
                await wf._gate.refused(refused[0][1])  # accounts it, and pauses
            except failures.BudgetStopError as stop:
                found = [outcomes[i] for i in sorted(counted)]
                answers = [a for a in found if isinstance(a, act.WebSearchOutput)]
                if answers:
                    why = f"{stop.which} ran out during its searches"
                    stop.gathered = _sources(topic, _results(answers), why)
                raise
        pending = [i for i, _ in refused]
    return [outcomes[i] for i in range(len(queries))], counted


def _results(answers: list[act.WebSearchOutput]) -> list[act.SearchResult]:
    """The answers' results, each address once, in order."""
    seen: set[str] = set()
    results: list[act.SearchResult] = []
    for answer in answers:
        for r in answer.results:
            if r.url not in seen:
                seen.add(r.url)
                results.append(r)
    return results


def _merged(
    wf: ResearchWorkflow, answers: list[act.WebSearchOutput], failed: int, queries: int
) -> list[act.SearchResult]:
    """The answers' results, each address once, in order; the status says what failed."""
    results = _results(answers)
    if failed:
        wf._status.message = f"{failed} of {queries} searches failed"
    return results

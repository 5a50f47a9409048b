"""Activity ``web_searches``: a pipeline run's whole search step, every query in one activity.

Why one activity: each activity costs a run three history events, and the
workflow a task to hear of its end. A pipeline run searched its three queries as
three activities, 9 to 12 events for answers of a few kilobytes, which put a run
at 1.41 times the history events per LLM call of the same run written as
Temporal's samples teach (``bench/temporal_cost.py``).

What one activity must not lose is what three gave: a finished search is not done
again, and a failing one is retried alone, under the ``search`` policy. So the
queries run concurrently within an attempt, and each query that answered or failed
for good goes into the heartbeat details (``Carried.finished``) as it ends. An
attempt that leaves open queries behind -- a retryable fault, or its worker lost --
is retried by Temporal, and the next attempt searches only those. Each query's
attempts are counted as ``web_search`` ones in the metrics, as before.

One window is wider than with an activity per query: Temporal's SDK sends
heartbeats at most every 0.8 heartbeat timeouts (and an answer waits 50 ms for the
step to end without one), so a worker killed less than that after a query answered
leaves it open, and it is searched again. The ``http``
provider's searches are cheap reads; searches through the model
(``anthropic-web-search``) are paid LLM requests and keep an activity each.

The workflow schedules this activity for runs of shape 2 (see ``pipeline``).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from steadfast_contract.activities import (
    WEB_SEARCH,
    WEB_SEARCHES,
    SearchFailure,
    SearchResult,
    WebSearchesInput,
    WebSearchesOutput,
    WebSearchInput,
    WebSearchOutput,
)
from steadfast_worker import errors
from steadfast_worker.activities import stickiness
from steadfast_worker.activities.base import will_retry
from steadfast_worker.activities.heartbeat import Carried, Heartbeater
from steadfast_worker.activities.search import SearchActivities
from steadfast_worker.metrics import OUTCOME_FAILURE


def answered(out: WebSearchOutput) -> dict[str, Any]:
    """A query's answer, as the heartbeat details keep it."""
    return {"answer": asdict(out)}


def failed(err: ApplicationError, attempt: int) -> dict[str, Any]:
    """A query's failure for good, as the heartbeat details keep it."""
    return {
        "failed": {
            "type": err.type or errors.UNEXPECTED,
            "message": err.message,
            "attempt": attempt,
        }
    }


def open_queries(inp: WebSearchesInput, finished: dict[str, Any]) -> list[int]:
    """The indexes of the queries an attempt still has to search."""
    return [i for i in range(len(inp.queries)) if str(i) not in finished]


def step_output(inp: WebSearchesInput, finished: dict[str, Any]) -> WebSearchesOutput:
    """The step's output once every query has ended; raises when a query failed and
    none brought a result (the run would have nothing to write from).

    The error is the first failed query's, non-retryable, and its details'
    ``attempt`` counts the step as one activity would: 1 plus every query's retries.
    """
    out = WebSearchesOutput()
    for i, query in enumerate(inp.queries):
        part = finished[str(i)]
        if "answer" in part:
            a = part["answer"]
            results = [SearchResult(**r) for r in a["results"]]
            out.searches.append(
                WebSearchOutput(a["query"], results, a["provider"], None, a["attempt"])
            )
        else:
            f = part["failed"]
            out.failures.append(SearchFailure(query, f["type"], f["message"], f["attempt"]))
    if not out.failures or any(a.results for a in out.searches):
        return out
    # Nothing to write from: the step fails with the first failed query's reason.
    first = out.failures[0]
    attempts = 1 + sum(f.attempt - 1 for f in out.failures)
    attempts += sum(a.attempt - 1 for a in out.searches)
    raise ApplicationError(
        first.message, {"attempt": attempts}, type=first.type, non_retryable=True
    )


def retry_error(retries: list[tuple[int, ApplicationError]], total: int) -> ApplicationError:
    """The error that has Temporal retry an attempt with ``retries`` still open.

    It takes the type of the first open query's error, and the longest delay any
    of them asked for (a rate limit's ``retry-after``).
    """
    _, first = min(retries, key=lambda r: r[0])
    delays = [e.next_retry_delay for _, e in retries if e.next_retry_delay is not None]
    return ApplicationError(
        f"{len(retries)} of {total} searches failed and will be retried: {first.message}",
        type=first.type,
        next_retry_delay=max(delays, default=None),
    )


class SearchStepActivities(SearchActivities):
    @activity.defn(name=WEB_SEARCHES)
    async def web_searches(self, inp: WebSearchesInput) -> WebSearchesOutput:
        info = activity.info()
        carried = Carried.from_info()
        pending = open_queries(inp, carried.finished)
        if carried.was_lost(info.attempt):
            # The lost attempt recorded nothing: each query it had open failed then.
            for _ in pending:
                self.metrics.record_attempt(
                    self.labels, WEB_SEARCH, OUTCOME_FAILURE, errors.TIMEOUT
                )
            await stickiness.replacing_lost_attempt()
        retries: list[tuple[int, ApplicationError]] = []
        async with Heartbeater(carried) as beat:

            async def search(i: int) -> None:
                try:
                    async with self.outcome(WEB_SEARCH):
                        query = WebSearchInput(inp.queries[i], inp.max_results)
                        carried.finished[str(i)] = answered(await self._search_http(query))
                except ApplicationError as err:
                    if will_retry(err):
                        retries.append((i, err))
                        return
                    carried.finished[str(i)] = failed(err, info.attempt)
                # What is done reaches the server as soon as the SDK sends it, unless the
                # step ends first (searches that all answer at once need no heartbeat).
                beat.soon()

            await asyncio.gather(*(search(i) for i in pending))
            if retries:  # raised within, so the heartbeat state goes with the failure
                raise retry_error(retries, len(inp.queries))
            return step_output(inp, carried.finished)


__all__ = ["SearchStepActivities", "step_output"]

"""The search step's decisions: which queries are still open, what it returns, how it retries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from steadfast_contract.activities import (
    SearchFailure,
    SearchResult,
    WebSearchesInput,
    WebSearchOutput,
)
from steadfast_worker.activities.searchstep import (
    answered,
    failed,
    open_queries,
    retry_error,
    step_output,
)

pytestmark = pytest.mark.unit

INP = WebSearchesInput(["alpha", "beta", "gamma"], 5)


def _answer(query: str, attempt: int = 1, urls: tuple[str, ...] = ("https://a.test/",)) -> Any:
    results = [SearchResult(f"t {u}", u, "s") for u in urls]
    return answered(WebSearchOutput(query, results, "http", None, attempt))


def _failed(kind: str, message: str, attempt: int) -> Any:
    return failed(ApplicationError(message, type=kind, non_retryable=True), attempt)


def test_a_retry_searches_only_the_queries_no_attempt_finished() -> None:
    finished = {"0": _answer("alpha"), "2": _failed("ResponseTooLarge", "too big", 1)}
    assert open_queries(INP, finished) == [1]
    assert open_queries(INP, {}) == [0, 1, 2]


def test_the_output_keeps_the_inputs_order_and_each_querys_attempt() -> None:
    finished = {
        "2": _answer("gamma", attempt=3, urls=("https://g.test/",)),
        "0": _answer("alpha"),
        "1": _failed("ServerError", "boom", 2),
    }
    out = step_output(INP, finished)
    assert [s.query for s in out.searches] == ["alpha", "gamma"]
    assert [s.attempt for s in out.searches] == [1, 3]
    assert out.searches[1].results == [SearchResult("t https://g.test/", "https://g.test/", "s")]
    assert out.failures == [SearchFailure("beta", "ServerError", "boom", 2)]


def test_failures_without_a_single_result_fail_the_step_with_the_first_one() -> None:
    finished = {
        "0": _answer("alpha", attempt=2, urls=()),  # answered, but found nothing
        "1": _failed("ResponseTooLarge", "more than 2097152 bytes", 1),
        "2": _failed("ServerError", "boom", 3),
    }
    with pytest.raises(ApplicationError) as raised:
        step_output(INP, finished)
    err = raised.value
    assert err.type == "ResponseTooLarge"
    assert err.message == "more than 2097152 bytes"
    assert err.non_retryable
    # Counted as one activity would be: 1 + (2-1) + (1-1) + (3-1) retries.
    assert err.details == ({"attempt": 4},)


def test_every_query_answered_is_no_failure() -> None:
    finished = {str(i): _answer(q) for i, q in enumerate(INP.queries)}
    out = step_output(INP, finished)
    assert len(out.searches) == 3
    assert out.failures == []


def test_the_retry_takes_the_first_open_querys_type_and_the_longest_delay() -> None:
    retries = [
        (
            2,
            ApplicationError(
                "slow down", type="RateLimited", next_retry_delay=timedelta(seconds=7)
            ),
        ),
        (1, ApplicationError("boom", type="ServerError")),
        (0, ApplicationError("later", type="Overloaded", next_retry_delay=timedelta(seconds=3))),
    ]
    err = retry_error(retries, 3)
    assert err.type == "Overloaded"
    assert not err.non_retryable
    assert err.next_retry_delay == timedelta(seconds=7)
    assert err.message.startswith("3 of 3 searches failed and will be retried: later")

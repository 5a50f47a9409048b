"""The run's figures, added up from what activities report (pure, used by the workflow)."""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import RetryState
from temporalio.exceptions import ActivityError, ApplicationError

from steadfast_contract import activities as act
from steadfast_contract.activities import LlmCall
from steadfast_contract.models import (
    MAX_INTERRUPTIONS_KEPT,
    Interruption,
    Phase,
    ResearchInput,
    RunSettings,
    RunStatus,
)
from steadfast_contract.pricing import Usage
from steadfast_worker import accounting, failures

pytestmark = pytest.mark.unit


def test_a_successful_llm_activity_counts_its_failed_spend_and_retries() -> None:
    st = RunStatus(reserved_usd=0.5)
    call = LlmCall("m", Usage(10, 20, cache_read_tokens=3, cache_write_tokens=4), 0.01, 0.02, 2)
    accounting.add_llm(st, call, attempt=3)
    assert st.cost_usd == pytest.approx(0.03)
    assert (st.input_tokens, st.output_tokens, st.llm_calls, st.retries) == (17, 20, 2, 2)
    assert st.reserved_usd == 0.0


def test_a_failed_activity_counts_what_its_details_carried() -> None:
    st = RunStatus(cost_usd=0.1)
    accounting.add_failure(st, {"failed_cost_usd": 0.05, "calls": 2, "attempt": 4})
    assert st.cost_usd == pytest.approx(0.15)
    assert (st.llm_calls, st.retries) == (2, 3)
    accounting.add_failure(st, {})
    assert st.retries == 3


# -- what durability saved ------------------------------------------------------------

Q_USD, R_USD = 0.004, 0.011
"""What the query call and the report call cost in the tables below."""


def _call(usd: float) -> LlmCall:
    return LlmCall("m", Usage(100, 50), usd, 0.0, 1)


def _pipeline(report_attempt: int = 1, query_attempt: int = 1, save_attempt: int = 1) -> RunStatus:
    """The pipeline's accounting in its order: queries, searches, report, save."""
    st = RunStatus()
    accounting.add_llm(st, _call(Q_USD), query_attempt, act.GENERATE_QUERIES)
    accounting.add_attempts(st, act.WEB_SEARCH, 1)
    accounting.add_llm(st, _call(R_USD), report_attempt, act.WRITE_REPORT)
    accounting.add_attempts(st, act.SAVE_REPORT, save_attempt)
    return st


@pytest.mark.parametrize(
    ("attempts", "avoided", "not_repeated", "interruptions"),
    [
        pytest.param({}, 0.0, 0, [], id="no retry saves nothing"),
        pytest.param(
            {"query_attempt": 3}, 0.0, 0,
            [Interruption(act.GENERATE_QUERIES, 1, 2, 0, 0.0)],
            id="the first call lost: nothing finished before it",
        ),
        pytest.param(
            {"report_attempt": 2}, Q_USD, 1,
            [Interruption(act.WRITE_REPORT, 2, 1, 1, Q_USD)],
            id="call 2 lost once after call 1 finished: call 1's spend",
        ),
        pytest.param(
            {"report_attempt": 3}, 2 * Q_USD, 2,
            [Interruption(act.WRITE_REPORT, 2, 2, 1, 2 * Q_USD)],
            id="call 2 lost twice: twice call 1's spend",
        ),
        pytest.param(
            {"save_attempt": 2}, Q_USD + R_USD, 2,
            [Interruption(act.SAVE_REPORT, 2, 1, 2, Q_USD + R_USD)],
            id="the save lost after both calls: both calls' spend",
        ),
        pytest.param(
            {"report_attempt": 2, "save_attempt": 2}, 2 * Q_USD + R_USD, 3,
            [
                Interruption(act.WRITE_REPORT, 2, 1, 1, Q_USD),
                Interruption(act.SAVE_REPORT, 2, 1, 2, Q_USD + R_USD),
            ],
            id="two interruptions add up, oldest first",
        ),
    ],
)  # fmt: skip
def test_what_resuming_saved_is_the_spend_finished_before_each_lost_attempt(
    attempts: dict[str, int], avoided: float, not_repeated: int, interruptions: list[Interruption]
) -> None:
    st = _pipeline(**attempts)
    assert st.avoided_usd == pytest.approx(avoided)
    assert st.calls_not_repeated == not_repeated
    assert st.interruptions == [
        Interruption(i.activity, i.call, i.attempts, i.finished_calls, pytest.approx(i.avoided_usd))
        for i in interruptions
    ]
    # What a restart would re-pay is finished spend only, never the total.
    assert (st.finished_usd, st.finished_calls) == (pytest.approx(Q_USD + R_USD), 2)


def test_failed_attempts_spend_is_not_what_a_restart_would_re_pay() -> None:
    st = RunStatus()
    # The query call finished on its second attempt; the first was cut off mid-stream.
    accounting.add_llm(st, LlmCall("m", Usage(1, 1), Q_USD, 0.003, 2), 2, act.GENERATE_QUERIES)
    assert (st.finished_usd, st.cost_usd) == (pytest.approx(Q_USD), pytest.approx(Q_USD + 0.003))
    accounting.add_llm(st, _call(R_USD), 2, act.WRITE_REPORT)
    assert st.avoided_usd == pytest.approx(Q_USD)


@pytest.mark.parametrize(
    ("activity", "call"),
    [
        pytest.param(act.WRITE_REPORT, 2, id="an LLM step is the next call"),
        pytest.param(act.DEEP_TURN, 2, id="a deep turn is the next call"),
        pytest.param(act.SEND_EMAIL, 1, id="another step comes after the calls finished"),
    ],
)
def test_a_step_that_failed_for_good_counts_its_retried_attempts(activity: str, call: int) -> None:
    st = RunStatus()
    accounting.add_llm(st, _call(Q_USD), 1, act.GENERATE_QUERIES)
    accounting.add_failure(st, {"failed_cost_usd": 0.002, "calls": 1, "attempt": 3}, activity)
    assert st.avoided_usd == pytest.approx(2 * Q_USD)
    assert st.calls_not_repeated == 2
    assert st.interruptions == [Interruption(activity, call, 2, 1, pytest.approx(2 * Q_USD))]
    # A failed attempt's spend is billed but is not finished work.
    assert (st.finished_usd, st.cost_usd) == (pytest.approx(Q_USD), pytest.approx(Q_USD + 0.002))


def test_a_failure_on_its_first_attempt_saved_nothing() -> None:
    st = RunStatus()
    accounting.add_llm(st, _call(Q_USD), 1, act.GENERATE_QUERIES)
    accounting.add_failure(st, {"attempt": 1}, act.WRITE_REPORT)
    assert (st.avoided_usd, st.calls_not_repeated, st.interruptions) == (0.0, 0, [])


def test_a_call_that_returned_nothing_billed_is_not_a_finished_call() -> None:
    st = RunStatus()
    accounting.add_llm(st, LlmCall("m", Usage(), 0.0, 0.0, 0), 1, act.WEB_SEARCH)
    accounting.add_llm(st, _call(R_USD), 2, act.WRITE_REPORT)
    assert (st.finished_calls, st.calls_not_repeated) == (1, 0)
    assert st.interruptions == [Interruption(act.WRITE_REPORT, 1, 1, 0, 0.0)]


def test_the_interruptions_listed_are_the_newest_but_the_totals_count_them_all() -> None:
    st = RunStatus()
    turns = MAX_INTERRUPTIONS_KEPT + 5
    for _ in range(turns):
        accounting.add_llm(st, _call(0.001), 2, act.DEEP_TURN)  # every turn lost once
    assert len(st.interruptions) == MAX_INTERRUPTIONS_KEPT
    assert [i.call for i in st.interruptions] == list(range(6, turns + 1))
    # Turn k re-paid k-1 finished turns: 0 + 1 + ... + (turns-1).
    assert st.calls_not_repeated == sum(range(turns))
    assert st.avoided_usd == pytest.approx(0.001 * sum(range(turns)))
    assert st.retries == turns


def test_the_run_record_carries_what_resuming_saved_under_the_runs_model() -> None:
    inp = ResearchInput("t", "market-watch", "research", RunSettings(model="claude-haiku-4-5"))
    st = RunStatus(phase=Phase.COMPLETED, cost_usd=0.02, avoided_usd=0.005)
    assert accounting.run_record(inp, st) == act.RecordRunInput(
        "market-watch", "research", "Completed", 0.02, avoided_usd=0.005, model="claude-haiku-4-5"
    )


def _failed_for_good(activity: str, failed_cost: float, attempt: int) -> ActivityError:
    """An activity's last failure, built as the SDK's converter builds it (the error,
    then its cause, which carries what the attempts paid)."""
    err = ActivityError(
        "activity error",
        scheduled_event_id=5,
        started_event_id=6,
        identity="worker",
        activity_type=activity,
        activity_id="7",
        retry_state=RetryState.RETRY_STATE_MAXIMUM_ATTEMPTS_REACHED,
    )
    details = {"failed_cost_usd": failed_cost, "calls": 1, "attempt": attempt}
    err.__cause__ = ApplicationError("boom", details, type="Overloaded")
    return err


def test_a_failure_counted_and_dropped_does_not_pass_for_the_next_one() -> None:
    """The run kept the ``id()`` of each failure it counted. One counted, then dropped (a
    deep turn's failed tool), freed its address; the next failure was often made
    there, passed for counted, and its spend was left out (the audit: the turn's $0.50
    went missing in 1000 of 1000 tries)."""
    accounted = failures.Accounted()
    status = RunStatus(topic="t")
    for _ in range(50):
        tool = _failed_for_good("deep_tool", 0.10, 3)
        accounted.add(tool)
        accounting.add_failure(status, failures.failure_details(tool), tool.activity_type)
        del tool
        turn = _failed_for_good("deep_turn", 0.50, 5)
        assert turn not in accounted
        accounted.add(turn)
        assert turn in accounted
        accounting.add_failure(status, failures.failure_details(turn), turn.activity_type)
    assert status.cost_usd == pytest.approx(50 * 0.60)

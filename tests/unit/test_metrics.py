"""Metrics: docs/design.md §4 names and labels, on a private registry, never a workflow id."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from steadfast_contract import errortypes
from steadfast_contract.activities import STEP_OF_ACTIVITY
from steadfast_contract.pricing import Usage
from steadfast_worker.metrics import Labels, Metrics

pytestmark = pytest.mark.unit

L = Labels("market-watch", "research")
BASE = {"agent": "market-watch", "namespace": "research"}

EXPECTED = {
    "steadfast_llm_tokens_total": {"agent", "namespace", "model", "token_type"},
    "steadfast_llm_cost_usd_total": {"agent", "namespace", "model"},
    "steadfast_activity_attempts_total": {"agent", "namespace", "activity", "outcome"},
    "steadfast_activity_retries_total": {"agent", "namespace", "activity", "error_type"},
    "steadfast_llm_retry_cost_usd_total": {"agent", "namespace", "model"},
    "steadfast_runs_total": {"agent", "namespace", "phase"},
    "steadfast_run_cost_usd_count": {"agent", "namespace"},
    "steadfast_budget_exhausted_total": {"agent", "namespace"},
    "steadfast_llm_cost_avoided_usd_total": {"agent", "namespace", "model"},
    "steadfast_llm_refusals_total": {"agent", "namespace", "model"},
}


def _exercise(m: Metrics) -> None:
    m.record_llm(L, "claude-sonnet-4-6", Usage(100, 50, 10, 5), 0.002)
    m.record_retry_cost(L, "claude-sonnet-4-6", 0.001)
    m.record_attempt(L, "write_report", "failure", "RateLimited")
    m.record_attempt(L, "write_report", "success")
    m.record_run(L, "BudgetExhausted", 0.9, avoided_usd=0.25, model="claude-sonnet-4-6")


def test_names_and_label_sets_match_the_design() -> None:
    m = Metrics()
    _exercise(m)
    seen: dict[str, set[str]] = {}
    for family in m.registry.collect():
        for sample in family.samples:
            seen.setdefault(sample.name, set()).update(sample.labels)
    for name, labels in EXPECTED.items():
        assert name in seen, name
        assert seen[name] - {"le"} == labels, name
    for labels in seen.values():
        assert not {"workflow_id", "run_id", "topic"} & labels


def test_values_are_recorded() -> None:
    m = Metrics()
    _exercise(m)
    get = m.registry.get_sample_value
    model = {**BASE, "model": "claude-sonnet-4-6"}
    assert get("steadfast_llm_tokens_total", {**model, "token_type": "input"}) == 100
    assert get("steadfast_llm_tokens_total", {**model, "token_type": "cache_write"}) == 5
    assert get("steadfast_llm_cost_usd_total", model) == pytest.approx(0.002)
    assert get("steadfast_llm_retry_cost_usd_total", model) == pytest.approx(0.001)
    attempts = {**BASE, "activity": "write_report"}
    assert get("steadfast_activity_attempts_total", {**attempts, "outcome": "failure"}) == 1
    assert get("steadfast_activity_attempts_total", {**attempts, "outcome": "success"}) == 1
    assert get("steadfast_activity_retries_total", {**attempts, "error_type": "RateLimited"}) == 1
    assert get("steadfast_runs_total", {**BASE, "phase": "BudgetExhausted"}) == 1
    assert get("steadfast_budget_exhausted_total", BASE) == 1
    assert get("steadfast_llm_cost_avoided_usd_total", model) == pytest.approx(0.25)
    assert get("steadfast_run_cost_usd_sum", BASE) == pytest.approx(0.9)
    assert get("steadfast_run_cost_usd_bucket", {**BASE, "le": "1.0"}) == 1
    assert get("steadfast_run_cost_usd_bucket", {**BASE, "le": "0.5"}) == 0


def test_a_completed_run_does_not_count_as_budget_exhausted() -> None:
    m = Metrics()
    m.record_run(L, "Completed", 0.01)
    assert m.registry.get_sample_value("steadfast_budget_exhausted_total", BASE) is None


def test_registries_are_private() -> None:
    a, b = Metrics(), Metrics()
    a.record_run(L, "Completed", 0.01)
    completed = {**BASE, "phase": "Completed"}
    assert b.registry.get_sample_value("steadfast_runs_total", completed) is None
    text = generate_latest(a.registry).decode()
    assert "python_gc" not in text
    assert "process_cpu" not in text
    assert "# TYPE steadfast_runs_total counter" in text


def test_what_resuming_saved_is_counted_once_per_run_that_ended() -> None:
    m = Metrics()
    model = "claude-sonnet-4-6"
    m.record_run(L, "Completed", 0.02, avoided_usd=0.004, model=model)
    m.record_run(L, "Failed", 0.03, avoided_usd=0.006, model=model)
    # A pause is not an end: a run in AwaitingBudget may still resume and save more.
    m.record_run(L, "AwaitingBudget", 0.03, "run", avoided_usd=0.006, model=model)
    m.record_run(L, "Completed", 0.01, model=model)  # nothing lost: adds zero
    avoided = {**BASE, "model": model}
    get = m.registry.get_sample_value
    assert get("steadfast_llm_cost_avoided_usd_total", avoided) == pytest.approx(0.01)
    assert get("steadfast_runs_total", {**BASE, "phase": "Completed"}) == 2


def test_a_run_that_lost_nothing_still_shows_the_series_at_zero() -> None:
    m = Metrics()
    m.record_run(L, "Completed", 0.01, model="claude-haiku-4-5")
    avoided = {**BASE, "model": "claude-haiku-4-5"}
    assert m.registry.get_sample_value("steadfast_llm_cost_avoided_usd_total", avoided) == 0.0
    assert m.registry.get_sample_value("steadfast_llm_refusals_total", avoided) == 0.0


def test_a_refusal_is_counted_with_its_spend_as_failed() -> None:
    m = Metrics()
    m.record_refusal(L, "claude-sonnet-4-6", 0.003)
    m.record_refusal(L, "claude-sonnet-4-6", 0.001)
    model = {**BASE, "model": "claude-sonnet-4-6"}
    get = m.registry.get_sample_value
    assert get("steadfast_llm_refusals_total", model) == 2
    assert get("steadfast_llm_retry_cost_usd_total", model) == pytest.approx(0.004)


def test_cache_writes_are_counted_by_ttl_once_each() -> None:
    m = Metrics()
    usage = Usage(100, 50, 10, cache_write_tokens=30, cache_write_1h_tokens=12)
    m.record_llm(L, "claude-sonnet-4-6", usage, 0.002)
    get = m.registry.get_sample_value
    model = {**BASE, "model": "claude-sonnet-4-6"}
    assert get("steadfast_llm_tokens_total", {**model, "token_type": "cache_write"}) == 18
    assert get("steadfast_llm_tokens_total", {**model, "token_type": "cache_write_1h"}) == 12
    every = sum(
        s.value
        for f in m.registry.collect()
        for s in f.samples
        if s.name == "steadfast_llm_tokens_total"
    )
    assert every == 100 + 50 + 10 + 30


def test_a_started_worker_exports_its_known_series_at_zero() -> None:
    # increase() sees a counter's first event only if an earlier sample of the series
    # exists: tests/integration/test_metrics_prometheus.py shows what it costs the alerts.
    m = Metrics()
    m.start(L, "claude-sonnet-4-6")
    get = m.registry.get_sample_value
    model = {**BASE, "model": "claude-sonnet-4-6"}
    for name in (
        "steadfast_llm_cost_usd_total",
        "steadfast_llm_retry_cost_usd_total",
        "steadfast_llm_refusals_total",
        "steadfast_llm_cost_avoided_usd_total",
    ):
        assert get(name, model) == 0.0, name
    assert get("steadfast_llm_tokens_total", {**model, "token_type": "output"}) == 0.0
    assert get("steadfast_budget_exhausted_total", BASE) == 0.0
    assert get("steadfast_budget_pauses_total", {**BASE, "budget": "day"}) == 0.0
    for phase in ("Completed", "Failed", "BudgetExhausted"):
        assert get("steadfast_runs_total", {**BASE, "phase": phase}) == 0.0, phase
    assert get("steadfast_run_cost_usd_count", BASE) == 0.0
    attempts = {**BASE, "activity": "write_report", "outcome": "failure"}
    assert get("steadfast_activity_attempts_total", attempts) == 0.0
    # Still one series per agent and model, never per run.
    for family in m.registry.collect():
        for sample in family.samples:
            assert not {"workflow_id", "run_id", "topic"} & set(sample.labels)


def test_a_started_worker_exports_its_retry_series_at_zero() -> None:
    """The retry-storm alert reads ``rate(steadfast_activity_retries_total[5m])``: a
    series born at its first retry shows no rate for it, so a new pod's first retries
    went unseen. Every activity's series for every type Temporal retries is there from
    the start, and only those: 64 per pod."""
    m = Metrics()
    m.start(L, "claude-sonnet-4-6")
    get = m.registry.get_sample_value
    retried = {**BASE, "activity": "write_report", "error_type": errortypes.RATE_LIMITED}
    assert get("steadfast_activity_retries_total", retried) == 0.0
    series = {
        (s.labels["activity"], s.labels["error_type"])
        for family in m.registry.collect()
        for s in family.samples
        if s.name == "steadfast_activity_retries_total"
    }
    assert series == {(a, t) for a in STEP_OF_ACTIVITY for t in errortypes.RETRYABLE_TYPES}
    assert len(series) == 64
    # A retried attempt lands on its series, which was at zero.
    m.record_attempt(L, "save_report", "failure", errortypes.DATABASE_ERROR)
    saved = {**BASE, "activity": "save_report", "error_type": errortypes.DATABASE_ERROR}
    assert get("steadfast_activity_retries_total", saved) == 1.0


def test_the_retryable_types_are_every_type_a_retry_can_carry() -> None:
    """Each error type name is retryable or not, never both nor neither (a new type
    added to the contract must be placed, or its first retries go unseen)."""
    names = {
        value for key, value in vars(errortypes).items() if key.isupper() and isinstance(value, str)
    }
    retryable, never = set(errortypes.RETRYABLE_TYPES), set(errortypes.NON_RETRYABLE_TYPES)
    assert not retryable & never
    # Raised non-retryable wherever it is raised (the same request, the same answer);
    # and the refusal of another agent's task, which the refusing worker does not
    # count (the next attempt counts it as one that vanished).
    unlabelled = {errortypes.RESPONSE_TOO_LARGE, errortypes.OTHER_AGENTS_TASK}
    assert retryable | never | unlabelled == names

"""The worker's Prometheus metrics, named exactly as docs/design.md §4 promises.

Dashboards, alert rules and the operator's cost roll-up all query these names,
so they live in one module and nowhere else. Each :class:`Metrics` owns its own
:class:`~prometheus_client.CollectorRegistry`: tests can run several workers in
one process and read each one's values without cross-talk, and the exposition
holds only Steadfast's series (no process collectors fighting the SDK's).

Labels never carry a workflow id or topic: per-run series would grow without
bound. Per-run figures belong in the ``status`` query and the run's result.

Every series whose labels the worker knows when it starts (its agent, its model, its
activities, the phases a run ends in, the budgets, the error types an activity's
attempt is retried for) is exported at zero from the start
(:meth:`Metrics.start`). Dashboards and alerts read counters through ``increase()``
and ``rate()``, which see only a change between two scrapes: a series that first
appeared at its first event (a run's ``BudgetExhausted`` at 1, the first call's cost)
would show no increase, and that event would be lost to every panel and alert. A
worker pod is new after every scale-up, so that would be most pods' first run.

The Temporal SDK's own metrics are served by its Rust core on a second port
(:func:`sdk_runtime`), because they are produced outside Python.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from steadfast_contract.activities import STEP_OF_ACTIVITY
from steadfast_contract.errortypes import RETRYABLE_TYPES
from steadfast_contract.models import Phase
from steadfast_contract.pricing import Usage
from steadfast_worker import health
from steadfast_worker.lastscrape import ScrapeClock

#: Run cost buckets in USD: from a cheap Haiku run to a runaway Opus one.
RUN_COST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

AGENT_LABELS = ("agent", "namespace")

OUTCOME_SUCCESS = "success"
OUTCOME_FAILURE = "failure"
OUTCOME_CANCELLED = "cancelled"

_TERMINAL = frozenset(p.value for p in Phase if p.terminal)

#: What ``steadfast_llm_tokens_total``'s ``token_type`` says (:meth:`Metrics.record_llm`).
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "cache_write_1h")
#: The budgets that pause a run (``steadfast_budget_pauses_total``'s ``budget``).
BUDGETS = ("run", "day")


@dataclass(frozen=True)
class Labels:
    """The identity of the ResearchAgent this worker serves."""

    agent: str
    namespace: str


class Metrics:
    """All of the worker's series, on a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # First, so a scrape notes its time before it collects any series.
        self.clock = ScrapeClock()
        r.register(self.clock)

        # Every series is per agent: the two labels are written here, once.
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, [*AGENT_LABELS, *labels], registry=r)

        def histogram(name: str, doc: str, *labels: str) -> Histogram:
            return Histogram(
                name, doc, [*AGENT_LABELS, *labels], buckets=RUN_COST_BUCKETS, registry=r
            )

        self.llm_tokens = counter(
            "steadfast_llm_tokens_total",
            "LLM tokens consumed, by token type (input, output, cache_read, cache_write "
            "for 5 minutes, cache_write_1h for an hour); each token is counted once.",
            "model",
            "token_type",
        )
        self.llm_cost = counter(
            "steadfast_llm_cost_usd_total",
            "USD spent on LLM calls: every billed call, including failed attempts "
            "(steadfast_llm_retry_cost_usd_total counts those separately).",
            "model",
        )
        self.llm_retry_cost = counter(
            "steadfast_llm_retry_cost_usd_total",
            "USD spent on LLM attempts that failed (re-asked output, streams cut off).",
            "model",
        )
        self.activity_attempts = counter(
            "steadfast_activity_attempts_total",
            "Activity attempts, by outcome (success, failure, cancelled).",
            "activity",
            "outcome",
        )
        self.activity_retries = counter(
            "steadfast_activity_retries_total",
            "Failed activity attempts that Temporal will retry, by error type.",
            "activity",
            "error_type",
        )
        self.runs = counter(
            "steadfast_runs_total",
            "Research runs that ended, by final phase.",
            "phase",
        )
        self.run_cost = histogram(
            "steadfast_run_cost_usd",
            "Total USD cost of each research run that ended.",
        )
        self.budget_exhausted = counter(
            "steadfast_budget_exhausted_total",
            "Runs stopped because the next LLM call did not fit a budget (the run's or the "
            "day's) and no more came within budget.pauseTimeout.",
        )
        self.budget_pauses = counter(
            "steadfast_budget_pauses_total",
            "Runs paused in phase AwaitingBudget before an LLM call, by the budget that "
            "stopped them (run, day).",
            "budget",
        )
        self.llm_refusals = counter(
            "steadfast_llm_refusals_total",
            "LLM replies the model refused (stop_reason refusal): each ends its step, and "
            "the run fails ModelRefused (what it spent is in the retry cost).",
            "model",
        )
        self.llm_cost_avoided = counter(
            "steadfast_llm_cost_avoided_usd_total",
            "USD a restart from scratch would have paid again: for each lost worker or "
            "failed attempt, the spend of the LLM calls finished before it; counted when "
            "the run ends.",
            "model",
        )

    def start(self, labels: Labels, model: str) -> None:
        """Export, at zero, every series of this worker whose labels are known now: its
        ``model``'s spend, tokens, refusals and savings, each activity's attempts by
        outcome and its retries by the error types Temporal retries (8 activities times 8
        types: 64 series; a non-retryable type is never counted there), the runs by the
        phase they end in, and the budget stops."""
        agent = (labels.agent, labels.namespace)
        for counter in (self.llm_cost, self.llm_retry_cost, self.llm_refusals):
            counter.labels(*agent, model)
        self.llm_cost_avoided.labels(*agent, model)
        for token_type in TOKEN_TYPES:
            self.llm_tokens.labels(*agent, model, token_type)
        for name in STEP_OF_ACTIVITY:
            for outcome in (OUTCOME_SUCCESS, OUTCOME_FAILURE, OUTCOME_CANCELLED):
                self.activity_attempts.labels(*agent, name, outcome)
            for error_type in RETRYABLE_TYPES:
                self.activity_retries.labels(*agent, name, error_type)
        for phase in sorted(_TERMINAL):
            self.runs.labels(*agent, phase)
        self.run_cost.labels(*agent)
        self.budget_exhausted.labels(*agent)
        for which in BUDGETS:
            self.budget_pauses.labels(*agent, which)

    def record_llm(self, labels: Labels, model: str, usage: Usage, cost_usd: float) -> None:
        """Tokens and spend of LLM calls that completed."""
        self.clock.touch()
        counts = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            # Split by TTL so that a sum over token types counts each token once.
            usage.cache_write_5m_tokens,
            usage.cache_write_1h_tokens,
        )
        for token_type, count in zip(TOKEN_TYPES, counts, strict=True):
            if count:
                self.llm_tokens.labels(labels.agent, labels.namespace, model, token_type).inc(count)
        self.llm_cost.labels(labels.agent, labels.namespace, model).inc(cost_usd)

    def record_retry_cost(self, labels: Labels, model: str, cost_usd: float) -> None:
        self.clock.touch()
        if cost_usd > 0:
            self.llm_retry_cost.labels(labels.agent, labels.namespace, model).inc(cost_usd)

    def record_refusal(self, labels: Labels, model: str, cost_usd: float) -> None:
        """A reply the model refused: spend that produced nothing."""
        self.llm_refusals.labels(labels.agent, labels.namespace, model).inc()
        self.record_retry_cost(labels, model, cost_usd)

    def record_attempt(
        self, labels: Labels, activity: str, outcome: str, retry_error_type: str | None = None
    ) -> None:
        """One attempt ended; ``retry_error_type`` when Temporal will try again."""
        self.clock.touch()
        self.activity_attempts.labels(labels.agent, labels.namespace, activity, outcome).inc()
        if retry_error_type is not None:
            self.activity_retries.labels(
                labels.agent, labels.namespace, activity, retry_error_type
            ).inc()

    def record_run(
        self,
        labels: Labels,
        phase: str,
        cost_usd: float,
        budget: str = "",
        avoided_usd: float = 0.0,
        model: str = "",
    ) -> None:
        """A run ended in ``phase``, having been saved ``avoided_usd`` of ``model`` calls
        by resuming; or, with ``AwaitingBudget``, paused for ``budget``."""
        self.clock.touch()
        if phase == Phase.AWAITING_BUDGET:
            self.budget_pauses.labels(labels.agent, labels.namespace, budget or "run").inc()
            return
        if phase in _TERMINAL:
            # Zero included, so the series exist from the first run that ends.
            self.llm_cost_avoided.labels(labels.agent, labels.namespace, model).inc(avoided_usd)
            self.llm_refusals.labels(labels.agent, labels.namespace, model).inc(0)
        self.runs.labels(labels.agent, labels.namespace, phase).inc()
        self.run_cost.labels(labels.agent, labels.namespace).observe(cost_usd)
        if phase == Phase.BUDGET_EXHAUSTED:
            self.budget_exhausted.labels(labels.agent, labels.namespace).inc()

    def serve(
        self, port: int, host: str = "0.0.0.0", readiness: health.Readiness | None = None
    ) -> None:
        """Expose ``/metrics`` on ``port`` in a daemon thread (0: don't), and
        ``readiness`` on :data:`~steadfast_contract.config.READY_PATH` (none given:
        never ready)."""
        if port:
            health.serve(port, host, self.registry, readiness or health.Readiness())


def sdk_runtime(host: str, port: int) -> Runtime | None:
    """A Temporal runtime exporting the SDK's metrics on ``host:port`` (0: none)."""
    if not port:
        return None
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=f"{host}:{port}", counters_total_suffix=True)
        )
    )

"""Pure construction of a ResearchAgent's ``status`` from what the operator observed.

The handlers gather facts (runs from Temporal, task-queue statistics, the
Deployment's ready replicas, a problem found while reconciling) and this module
turns them into the status document: conditions with reasons and messages,
per-run lines, cost totals, what resuming saved (``avoidedUSD``), and the day's
spend that gates new runs. Being pure,
it is unit-tested exhaustively and a status write happens only when the result
differs from what is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from steadfast_contract.crdschema import MAX_RUNS_LISTED as MAX_RUNS_LISTED
from steadfast_contract.spec import AgentSpec
from steadfast_contract.starter import RunRow, counted_runs
from steadfast_operator import budgets

READY = "Ready"
WORKERS_AVAILABLE = "WorkersAvailable"
BUDGET_EXHAUSTED = "BudgetExhausted"


def run_line(run: RunRow) -> dict[str, Any]:
    """One run as ``status.runs`` lists it."""
    out: dict[str, Any] = {
        "topic": run.topic,
        "workflowId": run.workflow_id,
        "runId": run.run_id,
        "phase": run.phase,
        "costUSD": round(run.cost_usd, 6),
        "llmCalls": run.llm_calls,
        "retries": run.retries,
        "reportId": run.report_id,
        "avoidedUSD": round(run.avoided_usd, 6),
    }
    if run.started_at:
        out["startedAt"] = _ts(run.started_at)
    if run.closed_at:
        out["closedAt"] = _ts(run.closed_at)
    return out


@dataclass(frozen=True)
class QueueInfo:
    """Task-queue statistics as last described (see :mod:`.taskqueues`)."""

    name: str
    backlog: int = 0
    backlog_age_seconds: float = 0.0
    pollers: int = 0
    add_rate: float = 0.0
    dispatch_rate: float = 0.0


@dataclass(frozen=True)
class Problem:
    """Why the agent is not Ready: a CamelCase reason and a message saying what to fix."""

    reason: str
    message: str


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def cost_today(runs: Iterable[RunRow], now: datetime, ledger_usd: float | None = None) -> float:
    """USD spent on ``now``'s UTC day: what the day's ledger settled (``ledger_usd``, the
    figure no topic rename or restart resets), or, where that is lower or unknown, what
    runs started that day spent (runs from before the ledger existed), a chain of runs
    continued as new counted once (:func:`~steadfast_contract.starter.counted_runs`)."""
    today = day_of(now)
    by_runs = sum(
        r.cost_usd for r in counted_runs(runs) if r.started_at and day_of(r.started_at) == today
    )
    return max(by_runs, ledger_usd or 0.0)


def budget_exhausted(
    spec: AgentSpec, runs: Iterable[RunRow], now: datetime, ledger_usd: float | None = None
) -> bool:
    """Whether the day cannot pay for another call of the agent (what is left of
    ``maxUSDPerDay`` is below the least a call reserves): no new run starts (and
    Schedules pause) until the next UTC day. Runs going are held by the day's ledger."""
    left = spec.budget.max_usd_per_day - cost_today(runs, now, ledger_usd)
    return left <= 0 or left < budgets.call_floor_usd(spec)


MAX_MESSAGE = 1024
"""Characters a condition message keeps: well under the CRD's 2048, which refuses the write."""


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` cut to ``limit`` characters, ending in an ellipsis when cut.

    Messages carry API errors whose response bodies can run to many kilobytes.
    """
    return message if len(message) <= limit else message[: limit - 1].rstrip() + "…"


def condition(
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    previous: Sequence[Mapping[str, Any]],
    now: datetime,
    generation: int,
) -> dict[str, Any]:
    """A condition whose ``lastTransitionTime`` moves only when its status changes."""
    status = "True" if ok else "False"
    since = _ts(now)
    for old in previous:
        if old.get("type") == type_ and old.get("status") == status:
            since = str(old.get("lastTransitionTime") or since)
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": bounded(message),
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def latest_runs(runs: Iterable[RunRow]) -> list[RunRow]:
    """Each topic's newest run first, then the older runs; newest first within each.

    Capped at MAX_RUNS_LISTED for the status size. Listing every topic's newest run
    before any older one keeps a topic that reruns often from pushing the others out.
    """
    ordered = sorted(
        runs, key=lambda r: r.started_at or datetime.min.replace(tzinfo=UTC), reverse=True
    )
    seen: set[str] = set()
    newest: list[RunRow] = []
    older: list[RunRow] = []
    for run in ordered:
        (older if run.topic in seen else newest).append(run)
        seen.add(run.topic)
    return (newest + older)[:MAX_RUNS_LISTED]


def build_status(
    *,
    generation: int,
    spec: AgentSpec,
    runs: Sequence[RunRow],
    queue: QueueInfo | None,
    desired: int,
    ready: int,
    selector: str,
    problem: Problem | None,
    previous: Mapping[str, Any],
    now: datetime,
    last_active: datetime | None = None,
    ledger_usd: float | None = None,
) -> dict[str, Any]:
    """The full status document for one agent."""
    prev_conditions = list(previous.get("conditions") or [])
    listed = latest_runs(runs)
    today = cost_today(runs, now, ledger_usd)
    exhausted = budget_exhausted(spec, runs, now, ledger_usd)
    # A run that reached its last phase is finished even while Temporal closes it
    # (its final bookkeeping runs after the phase is set): the summary and the
    # Ready message agree with the phases ``status.runs`` lists.
    finished = sum(1 for r in runs if r.terminal or not r.running)
    counted = counted_runs(runs)  # figures: a chain continued as new, once

    if ready > 0:
        workers = (True, "MinimumReplicasAvailable", f"{ready} of {desired} workers ready")
    elif desired == 0:
        workers = (False, "ScaledToZero", "no workers: scaled to zero until work appears")
    else:
        workers = (False, "WorkersNotReady", f"0 of {desired} workers ready")

    if problem is not None:
        ready_cond = (False, problem.reason, problem.message)
    else:
        running = len(runs) - finished
        ready_cond = (
            True,
            "Reconciled",
            f"{len(spec.unique_topics())} topics, {running} running, {finished} finished",
        )

    if exhausted:
        budget = (
            True,
            "DailyBudgetReached",
            f"spent {today:.4f} of {spec.budget.max_usd_per_day} USD today (UTC); "
            "no new runs start until tomorrow",
        )
    else:
        budget = (
            False,
            "WithinBudget",
            f"spent {today:.4f} of {spec.budget.max_usd_per_day} USD today (UTC)",
        )

    conditions = [
        condition(READY, *ready_cond, prev_conditions, now, generation),
        condition(WORKERS_AVAILABLE, *workers, prev_conditions, now, generation),
        condition(BUDGET_EXHAUSTED, *budget, prev_conditions, now, generation),
    ]
    worker_status: dict[str, Any] = {"desired": desired, "ready": ready, "selector": selector}
    if last_active is not None:
        worker_status["lastActiveTime"] = _ts(last_active)
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions,
        "workers": worker_status,
        "runs": [run_line(r) for r in listed],
        "runsSummary": f"{finished}/{len(runs)}",
        # What resuming saved the runs observed: spend restarts would have re-paid.
        "avoidedUSD": round(sum(r.avoided_usd for r in counted), 6),
        "cost": {
            "totalUSD": round(sum(r.cost_usd for r in counted), 6),
            "todayUSD": round(today, 6),
            "day": day_of(now),
            "inputTokens": sum(r.input_tokens for r in counted),
            "outputTokens": sum(r.output_tokens for r in counted),
        },
    }
    if queue is not None:
        status["taskQueue"] = {
            "name": queue.name,
            "backlog": queue.backlog,
            "backlogAgeSeconds": round(queue.backlog_age_seconds, 3),
            "pollers": queue.pollers,
            "addRate": round(queue.add_rate, 3),
            "dispatchRate": round(queue.dispatch_rate, 3),
            "runningWorkflows": sum(1 for r in runs if r.running),
        }
    return status


#: Fields that change on every tick while work waits; rewriting the status for
#: them alone would be a write per agent per tick.
VOLATILE = ("backlogAgeSeconds", "addRate", "dispatchRate")
VOLATILE_REFRESH = 30.0
"""Seconds after which a change in volatile fields alone is written."""


def _stable(doc: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    if isinstance(out.get("taskQueue"), Mapping):
        out["taskQueue"] = {k: v for k, v in out["taskQueue"].items() if k not in VOLATILE}
    return out


def differs(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether writing ``desired`` would change the stored status."""
    return any(current.get(k) != v for k, v in desired.items())


def needs_write(
    current: Mapping[str, Any], desired: Mapping[str, Any], since_last_write: float | None
) -> bool:
    """Write on any meaningful change; on volatile-only changes at most every 30 s."""
    if differs(_stable(current), _stable(desired)):
        return True
    if not differs(current, desired):
        return False
    return since_last_write is None or since_last_write >= VOLATILE_REFRESH

"""The operator's decisions: what was observed in, a :class:`Plan` out, no I/O.

A reconcile reads as observe → plan → execute → one status write
(:mod:`.reconcile`). Everything it decides is decided here, by :func:`plan`,
from an :class:`Observed` snapshot: which children to create, replace or
delete, which Schedules to create, update, pause or delete, which topics to
start or stop, how many workers the task queue needs, and the status document
with whether it must be written. The executor performs a plan and nothing else,
so every decision has a table test without a server (``tests/unit``).

The building blocks stay where they were: :mod:`.children` (child writes and
conflicts, over :mod:`.render` and :mod:`.apply`), :mod:`.topics` (which topics start,
which are recorded and which go), :mod:`.autoscale` (replicas)
and :mod:`.status` (the status document).

When an execution step fails, its failure is folded back into the observation
(:meth:`Observed.after`) and the planner is asked again: a plan made with a
problem never repeats the step that failed, so the status always says why.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from steadfast_contract.config import WorkerConfig
from steadfast_contract.spec import AgentSpec
from steadfast_contract.starter import RunRow
from steadfast_operator import autoscale, budgets, render, status
from steadfast_operator import children as child_writes
from steadfast_operator.children import ChildChange
from steadfast_operator.status import Problem, QueueInfo
from steadfast_operator.topics import (
    Start as Start,
)
from steadfast_operator.topics import (
    due_starts as due_starts,
)
from steadfast_operator.topics import (
    pin_task_queue as pin_task_queue,
)
from steadfast_operator.topics import (
    queue_edit_ignored as queue_edit_ignored,
)
from steadfast_operator.topics import (
    record_topics,
)
from steadfast_operator.topics import (
    removed_topics as removed_topics,
)
from steadfast_operator.topics import (
    started_topics as started_topics,
)

Obj = dict[str, Any]

#: Seconds before Kopf retries a change whose problem may go away by itself.
RETRY_AFTER: Mapping[str, float] = {
    "SecretMissing": 15.0,
    "TemporalUnreachable": 10.0,
    "KedaNotInstalled": 120.0,
    "ChildConflict": 30.0,
    "ReconcileError": 10.0,
    # The agent that kept the queue may be deleted or move: judge the claim again.
    "TaskQueueShared": 15.0,
}

NO_DURABLE_STORE = "NoDurableStore"
"""The reason of an agent with no durable report store: it gets no worker."""

#: Problems of a change that still let the operator read Temporal: the spec is valid
#: and Temporal answers; only its Schedule was refused.
TEMPORAL_STILL_READ = frozenset({"ScheduleInvalid"})

#: The spec the status is written with while no spec of the agent has validated.
_PLACEHOLDER_SPEC = {"topics": ["-"]}


@dataclass(frozen=True)
class TemporalView:
    """What Temporal said during this pass."""

    queue: QueueInfo | None = None
    runs: tuple[RunRow, ...] = ()
    problem: Problem | None = None
    """Why Temporal could not be read (``TemporalUnreachable``, ``TemporalError``)."""
    schedules: Mapping[str, str] | None = None
    """The agent's Schedules found in Temporal, id -> topic (``None``: not listed)."""
    ledger_usd: float | None = None
    """What today's budget ledger says the agent spent (``None``: not read)."""


@dataclass(frozen=True)
class Observed:
    """Everything a decision may depend on, gathered before any is made."""

    agent: render.AgentRef
    now: datetime
    generation: int
    """The generation last reconciled, which the status reports as observed."""
    defaults: render.Defaults = field(default_factory=render.Defaults)
    spec: AgentSpec | None = None
    """The last spec that validated (an invalid edit leaves the previous one in force)."""
    config: WorkerConfig | None = None
    problem: Problem | None = None
    """Why the agent is not Ready: found by this change, or remembered from the last."""
    changed: bool = False
    """A change or resume: children, Schedules and removed topics are reconciled too."""
    settled: bool = False
    """The change's own steps were performed (or failed): plan none of them again."""
    deleting: bool = False
    children: Mapping[str, Obj | None] = field(default_factory=dict)
    """Live children by kind (``None``: absent); read on a change only."""
    forbidden: frozenset[str] = frozenset()
    """Child kinds the operator may not read (a chart without KEDA support)."""
    replicas: tuple[int, int] | None = None
    """(spec, ready) replicas of the worker Deployment; ``None`` when it does not exist."""
    temporal: TemporalView | None = None
    """``None`` when Temporal was not asked (a problem only a change can fix)."""
    previous_status: Mapping[str, Any] = field(default_factory=dict)
    schedules_paused: bool = False
    """Whether the Schedules were last left paused (daily budget spent)."""
    history: autoscale.History = field(default_factory=autoscale.History)
    since_last_write: float | None = None
    """Seconds since the last status write (``None``: none yet)."""

    def after(self, failure: Failure) -> Observed:
        """This observation once ``failure`` happened executing its plan."""
        if failure.stage == "setup":
            return replace(self, problem=failure.problem, settled=True)
        view = self.temporal or TemporalView()
        return replace(self, settled=True, temporal=replace(view, problem=failure.problem))


@dataclass(frozen=True)
class Failure:
    """An execution step that failed: a change's own step, or a Temporal call of the tick."""

    problem: Problem
    stage: Literal["setup", "temporal"]


@dataclass(frozen=True)
class ScheduleChange:
    """Schedules to create or update (one per topic, on ``cron``) and to delete."""

    upsert: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    cron: str = ""
    paused: bool = False


@dataclass(frozen=True)
class Scale:
    """The built-in autoscaler's answer for the worker Deployment."""

    current: int
    desired: int
    reason: str

    @property
    def changed(self) -> bool:
        return self.desired != self.current


@dataclass(frozen=True)
class Plan:
    """What to do, in the order the executor does it."""

    children: tuple[ChildChange, ...] = ()
    schedules: ScheduleChange | None = None
    """A change's Schedules: every topic's on the current cron, removed topics' deleted."""
    stop: tuple[str, ...] = ()
    """Topics whose running workflows ``deletion_policy`` applies to."""
    stop_unlisted: bool = False
    """Also the agent's running workflows of topics nobody lists (on deletion)."""
    deletion_policy: str = "Cancel"
    start: tuple[Start, ...] = ()
    pause: ScheduleChange | None = None
    """Schedules paused or resumed because the day's budget state changed."""
    budgets: tuple[budgets.BudgetPush, ...] = ()
    """Running runs to pass the spec's budget on to (a ``budget`` update each)."""
    scale: Scale | None = None
    """``None`` when the operator does not own replicas now (keda, none, no statistics)."""
    history: autoscale.History | None = None
    """The autoscaler's memory after this decision; kept when the plan is done."""
    status: Obj | None = None
    """The status document (``None``: nothing to report yet)."""
    write_status: bool = False
    problem: Problem | None = None
    """What the status reports as the reason the agent is not Ready."""
    remember: Problem | None = None
    """The change's own problem, kept until the next change (ticks do not clear it)."""
    retry: float | None = None
    """Seconds until Kopf should retry the change; ``None`` when only an edit can help."""

    @property
    def empty(self) -> bool:
        """Nothing to write anywhere."""
        return not (
            self.children
            or self.schedules
            or self.stop
            or self.start
            or self.pause
            or self.budgets
            or (self.scale is not None and self.scale.changed)
            or self.write_status
        )


def needs_temporal(problem: Problem | None) -> bool:
    """Whether Temporal is worth asking while ``problem`` stands."""
    return problem is None or problem.reason in TEMPORAL_STILL_READ


def plan(obs: Observed) -> Plan:
    """Every decision for one pass over one agent."""
    if obs.deleting:
        return plan_deletion(obs)
    spec, config, problem = obs.spec, obs.config, obs.problem
    view = obs.temporal if needs_temporal(problem) else None
    setup = obs.changed and not obs.settled and problem is None and spec is not None
    writes: tuple[ChildChange, ...] = ()
    if setup and spec is not None:
        found = child_writes.for_spec(obs.agent, spec, obs.defaults, obs.children, obs.forbidden)
        if isinstance(found, Problem):
            # Someone else's object holds a child's name: write nothing, start nothing.
            problem, view, setup = found, None, False
        else:
            writes = found
    if setup and view is not None and _unreachable(view):
        # A change that cannot reach Temporal is retried; its children still go out.
        problem = view.problem
    out = Plan()
    if setup and spec is not None:
        out = replace(out, children=writes)
        if obs.replicas is None and any(c.key == ("create", "Deployment") for c in out.children):
            # The Deployment this plan creates starts at minReplicas, none ready yet.
            obs = replace(obs, replicas=(spec.workers.min_replicas, 0))
    if setup and spec is not None and config is not None and problem is None:
        listed = view.schedules if view is not None else None
        removed = removed_topics(spec, obs.previous_status, listed)
        out = replace(
            out,
            schedules=setup_schedules(spec, removed, obs.schedules_paused, listed),
            stop=removed,
            deletion_policy=spec.deletion_policy,
        )
    if spec is not None and config is not None and view is not None and view.problem is None:
        exhausted = status.budget_exhausted(spec, view.runs, obs.now, view.ledger_usd)
        done = started_topics(obs.previous_status)
        out = replace(
            out,
            start=() if exhausted else due_starts(config, spec, view.runs, done),
            pause=pause_change(spec, problem, exhausted, obs.schedules_paused),
            budgets=budgets.pushes(spec, view.runs) if problem is None else (),
        )
    stranded = obs.replicas[0] if obs.replicas is not None else 0
    if problem is not None and problem.reason == NO_DURABLE_STORE:
        # Workers rendered before the store was required would write reports to
        # their pods' disks: none runs until the spec names a durable store, and
        # KEDA (on a change, which reads the children) stops scaling them.
        out = replace(out, children=child_writes.release_keda(obs.agent, obs.children))
        if stranded > 0:
            out = replace(out, scale=Scale(stranded, 0, "no durable report store"))
    # A failed Temporal read is what the status says now; the change's own problem
    # (if any) is remembered for the ticks until the next change.
    shown = view.problem if view is not None and view.problem is not None else problem
    replicas = _replicas(obs, view, len(out.start)) if out.scale is None else {}
    out = replace(out, problem=shown, **replicas)
    doc, write = status_document(obs, view, out)
    remember = problem if obs.changed else None
    retry = RETRY_AFTER.get(remember.reason) if remember is not None else None
    return replace(out, status=doc, write_status=write, remember=remember, retry=retry)


def _unreachable(view: TemporalView) -> bool:
    return view.problem is not None and view.problem.reason == "TemporalUnreachable"


def setup_schedules(
    spec: AgentSpec, removed: tuple[str, ...], paused: bool, found: Mapping[str, str] | None = None
) -> ScheduleChange:
    """One Schedule per topic on ``spec.schedule`` (none without one); removed topics' go.

    Without a cron, the Schedules found in Temporal go (every topic's when they
    were not listed).
    """
    topics = tuple(spec.unique_topics())
    if spec.schedule:
        return ScheduleChange(upsert=topics, delete=removed, cron=spec.schedule, paused=paused)
    if found is not None:
        return ScheduleChange(delete=tuple(sorted(set(found.values()) | set(removed))))
    return ScheduleChange(delete=topics + removed)


def pause_change(
    spec: AgentSpec, problem: Problem | None, exhausted: bool, paused: bool
) -> ScheduleChange | None:
    """Pause the Schedules when the day's budget is spent, resume them the next day.

    Only on a change of that state: an update per topic per tick would cost
    Temporal calls for nothing.
    """
    if not spec.schedule or problem is not None or exhausted == paused:
        return None
    return ScheduleChange(upsert=tuple(spec.unique_topics()), cron=spec.schedule, paused=exhausted)


def _replicas(obs: Observed, view: TemporalView | None, starting: int = 0) -> dict[str, Any]:
    """The built-in autoscaler's decision, made on a copy of its memory. None when
    Temporal was not read whole: a listing of runs that failed after the queue's
    statistics were read looks like an idle agent, and would scale running workers away
    (the replicas are held, as while Temporal cannot be reached)."""
    spec = obs.spec
    if (
        spec is None
        or view is None
        or view.queue is None
        or view.problem is not None
        or obs.replicas is None
        or spec.workers.autoscaler != "builtin"
    ):
        return {}
    history = copy.deepcopy(obs.history)
    decision = autoscale.decide_for(
        spec, view.queue, view.runs, obs.replicas[0], history, obs.now, starting
    )
    scale = Scale(obs.replicas[0], decision.desired, decision.reason)
    return {"scale": scale, "history": history}


def status_document(obs: Observed, view: TemporalView | None, out: Plan) -> tuple[Obj | None, bool]:
    """The status for this pass and whether it must be written."""
    spec = obs.spec
    if spec is None:
        if out.problem is None:
            return None, False  # not reconciled yet: nothing to report
        # The spec never validated: report the problem with the schema's defaults.
        spec = AgentSpec.model_validate(_PLACEHOLDER_SPEC)
    current, ready = obs.replicas if obs.replicas is not None else (0, 0)
    runs = view.runs if view is not None else ()
    history = out.history or obs.history
    doc = status.build_status(
        generation=obs.generation,
        spec=spec,
        runs=runs,
        queue=view.queue if view is not None else None,
        desired=out.scale.desired if out.scale is not None else current,
        ready=ready,
        selector=render.selector_string(obs.agent),
        problem=out.problem,
        previous=obs.previous_status,
        now=obs.now,
        last_active=(
            datetime.fromtimestamp(history.last_active, UTC) if history.last_active else None
        ),
        ledger_usd=view.ledger_usd if view is not None else None,
    )
    if not runs and obs.previous_status.get("runs"):
        # Temporal was not read: keep what is known instead of blanking it.
        for key in ("runs", "runsSummary", "cost"):
            doc.pop(key, None)
    recorded = record_topics(
        spec if obs.spec else None, obs.previous_status, runs, out.start, out.stop
    )
    if recorded or obs.previous_status.get("startedTopics"):
        doc["startedTopics"] = recorded
    return doc, status.needs_write(obs.previous_status, doc, obs.since_last_write)


def plan_deletion(obs: Observed) -> Plan:
    """Before the agent goes: every Schedule deleted, ``deletionPolicy`` applied to runs.

    Topics the status still lists count too (an edit may have dropped them before
    their runs ended), and so do those of the agent's Schedules found in Temporal
    (removed beyond what the status lists); the agent's running workflows of
    topics nobody lists are found in Temporal. Children need no deleting: their
    owner references let the garbage collector remove them.
    """
    if obs.spec is None:
        return Plan()
    previous = {r.get("topic") for r in (obs.previous_status.get("runs") or []) if r.get("topic")}
    previous |= started_topics(obs.previous_status)
    found = obs.temporal.schedules if obs.temporal is not None else None
    topics = tuple(sorted(set(obs.spec.unique_topics()) | previous | set((found or {}).values())))
    return Plan(
        schedules=ScheduleChange(delete=topics),
        stop=topics,
        stop_unlisted=obs.spec.deletion_policy == "Cancel",
        deletion_policy=obs.spec.deletion_policy,
    )

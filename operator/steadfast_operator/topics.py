"""Which topics an agent starts, records and stops: the planner's topic decisions.

A topic runs once (a Schedule re-runs it); whether it already ran must not
depend on what Temporal still remembers, because retention and ``temporal
workflow delete`` forget finished runs. So the status keeps a record of every
topic started (``status.startedTopics``), written in the same pass as the
start, bounded by the spec's topics, and read back before each start
(:func:`due_starts`). Removed topics are found from that record too, so one
added and removed between two status ticks still has its run stopped and its
Schedule deleted (:func:`removed_topics`).

Pure functions over the spec, the previous status and the observed runs; the
planner (:mod:`.planner`) calls them and has their table tests beside its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from steadfast_contract import ids
from steadfast_contract.config import WorkerConfig
from steadfast_contract.spec import AgentSpec
from steadfast_contract.starter import RunRow
from steadfast_operator.render import AgentRef, task_queue


@dataclass(frozen=True)
class Start:
    """A topic to start now, with the workflow id every starter derives for it."""

    topic: str
    workflow_id: str


def removed_topics(
    spec: AgentSpec, previous_status: Mapping[str, Any], found: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """Topics the status knows or a Schedule in Temporal runs that the spec no longer has.

    The status lists a bounded number of runs but records every topic started
    (``startedTopics``, written in the pass that starts it, so a topic added and
    removed before the next tick is known); the Schedules found in Temporal
    (``found``) name topics removed long ago too.
    """
    topics = set(spec.unique_topics())
    previous = {r.get("topic") for r in (previous_status.get("runs") or [])}
    previous |= started_topics(previous_status)
    previous |= set((found or {}).values())
    return tuple(sorted(t for t in previous if t and t not in topics))


def started_topics(previous_status: Mapping[str, Any]) -> set[str]:
    """The topics the status records as started (``status.startedTopics``)."""
    return {str(t) for t in (previous_status.get("startedTopics") or []) if t}


def due_starts(
    cfg: WorkerConfig,
    spec: AgentSpec,
    runs: tuple[RunRow, ...],
    done: set[str] | frozenset[str] = frozenset(),
) -> tuple[Start, ...]:
    """Topics never started: no run in Temporal and none recorded in ``done``.

    A finished run is not repeated (only a Schedule re-runs), not even once
    Temporal's retention or ``temporal workflow delete`` removed it: ``done`` is
    the record the status keeps, which outlives them.
    """
    seen = {r.topic for r in runs} | set(done)
    return tuple(
        Start(t, ids.workflow_id(cfg.namespace, cfg.agent, t))
        for t in spec.unique_topics()
        if t not in seen
    )


def record_topics(
    spec: AgentSpec | None,
    previous_status: Mapping[str, Any],
    runs: Iterable[RunRow],
    starting: Iterable[Start],
    stopping: Iterable[str],
) -> list[str]:
    """``status.startedTopics`` after a plan: bounded by the spec's topics.

    A topic is recorded once it has a run in Temporal or the plan starts it
    (``starting``), and kept while it stays in the spec. A removed topic is kept
    until a plan stops its runs and deletes its Schedule (``stopping``): that
    plan drops it, and when one of its steps fails the executor plans again
    without them, so the topic stays recorded until its removal is done.
    """
    if spec is None:
        return sorted(started_topics(previous_status))
    current = set(spec.unique_topics())
    known = started_topics(previous_status) | {r.topic for r in runs}
    known |= {s.topic for s in starting}
    gone = set(stopping)
    return sorted(t for t in known if t in current or t not in gone)


def pin_task_queue(agent: AgentRef, spec: AgentSpec, previous: Mapping[str, Any]) -> AgentSpec:
    """``spec`` with the task queue the agent's runs already use, whatever it now says.

    A run stays on the queue it was started on, and the agent's day ledger runs
    there too (:func:`steadfast_contract.budget.ledger_key`): workers moved to
    another queue would leave the running runs with no worker, and the day's
    budget would start again from zero on the new one. So once the status records
    a queue, the agent keeps it (written into the spec, so the workers, starts,
    Schedules and KEDA agree). The CRD refuses the edit at ``kubectl apply``
    (``spec.temporal.taskQueue`` is immutable); this holds under a CRD from before
    that rule, and keeps the ambiguous default queue of releases before
    :data:`steadfast_contract.ids.SEPARATOR` for the agents already on it. A new
    agent gets the queue its spec names.
    """
    recorded = queue_in_status(previous)
    if not recorded or recorded == task_queue(agent, spec):
        return spec
    temporal = spec.temporal.model_copy(update={"task_queue": recorded})
    return spec.model_copy(update={"temporal": temporal})


def queue_in_status(previous: Mapping[str, Any]) -> str:
    """The task queue the status records the agent's runs on ("" before the first)."""
    queue = previous.get("taskQueue")
    return str(queue.get("name") or "") if isinstance(queue, Mapping) else ""


def queue_edit_ignored(agent: AgentRef, spec: AgentSpec, previous: Mapping[str, Any]) -> str:
    """What to warn when ``spec`` names a queue the agent will not move to ("" if none).

    An agent kept on the earlier default queue with no queue in its spec is not
    warned about: the user asked for no queue in particular.
    """
    recorded = queue_in_status(previous)
    wanted = task_queue(agent, spec)
    if not recorded or recorded == wanted:
        return ""
    if not spec.temporal.task_queue and recorded == ids.legacy_task_queue(
        agent.namespace, agent.name
    ):
        return ""
    return (
        f"spec.temporal.taskQueue asks for {wanted!r}, but the agent's runs and its day's "
        f"budget are on {recorded!r}, which it keeps; create a new agent to move"
    )

"""The built-in autoscaler's decision: how many workers a task queue needs now.

Kept free of I/O so the whole policy is a table-driven unit test. The operator
feeds it Temporal's task-queue statistics and the agent's running workflows on
every status tick, writes the answer through the Deployment's scale
subresource, and keeps the small :class:`History` between ticks in memory.

Policy, in the order it is applied:

1. Need: one worker per ``targetBacklogPerWorker`` backlogged tasks (workflow
   and activity queues together), projected ``GROWTH_HORIZON`` seconds ahead
   when tasks arrive faster than polling workers take them; at least the workers
   whose slots the activities in flight occupy (``maxConcurrentActivities`` each:
   a run in an activity's phase holds one), so a scale-down never takes away
   capacity that calls are using; at least one worker while any workflow is
   running, since a running workflow makes no progress without one.
2. Clamp to ``[minReplicas, maxReplicas]``.
3. Up at once: scaling up (and from zero) never waits.
4. Down only after a stabilisation window of ``scaleDownDelay``: the target is
   the highest need seen during the window, so a brief lull never removes
   workers, and zero is reached only after a full window with no backlog and no
   running run. After an operator restart the history is empty, so nothing
   scales down until a full window has been observed again (never too early).

Which pod a scale-down removes is the ReplicaSet's choice, and the slot count is
a floor, not a map of which worker runs what: a removed worker that still runs
activities finishes them before it exits (:mod:`.drain`: its grace period outlasts
the longest activity), so this policy decides capacity, never correctness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from steadfast_contract.models import Phase

if TYPE_CHECKING:
    from steadfast_contract.spec import AgentSpec
    from steadfast_contract.starter import RunRow
    from steadfast_operator.status import QueueInfo

GROWTH_HORIZON = 10.0
"""Seconds of net arrivals to provision for when the backlog is growing."""

ACTIVITY_PHASES = frozenset(
    {
        Phase.GENERATING_QUERIES,
        Phase.SEARCHING,
        Phase.RESEARCHING,
        Phase.WRITING,
        Phase.SAVING,
        Phase.EMAILING,
    }
)
"""Phases in which a run has an activity scheduled or running (one, but for a few
short parallel searches); Pending and AwaitingApproval hold no activity slot."""


@dataclass(frozen=True)
class Observation:
    """What Temporal says about an agent's task queue at one instant."""

    backlog: int
    """Approximate backlogged tasks, workflow and activity queues together."""
    backlog_age_seconds: float = 0.0
    add_rate: float = 0.0
    """Tasks added per second."""
    dispatch_rate: float = 0.0
    """Tasks handed to pollers per second."""
    pollers: int = 0
    running_workflows: int = 0
    activities_in_flight: int = 0
    """Runs in an activity's phase: the activity slots their calls hold or wait for."""


@dataclass(frozen=True)
class Limits:
    min_replicas: int
    max_replicas: int
    target_backlog_per_worker: int
    scale_down_delay: float
    """Seconds; also the scale-down stabilisation window."""
    slots_per_worker: int = 0
    """Activities one worker runs at once (``maxConcurrentActivities``); 0 ignores slots."""


@dataclass
class History:
    """Recent needs, oldest first, as ``(time, need)``; the window's memory."""

    needs: list[tuple[float, int]] = field(default_factory=list)
    started: float | None = None
    """When observation began (an operator restart resets it)."""
    last_active: float | None = None
    """Last time there was backlog or a running workflow."""


@dataclass(frozen=True)
class Decision:
    desired: int
    need: int
    reason: str


def need(obs: Observation, limits: Limits) -> int:
    """Workers the current load calls for, before clamping and stabilisation."""
    backlog = float(max(obs.backlog, 0))
    # Only project growth when workers are polling and still falling behind: with no
    # pollers nothing is dispatched, and a burst would look like endless growth. A rate
    # that is no number (inf, NaN) projects none: math.ceil(inf) raised, and the agent
    # got no status nor scale decision while the server said so.
    rates = (obs.add_rate, obs.dispatch_rate)
    growing = all(math.isfinite(r) for r in rates) and obs.add_rate > obs.dispatch_rate
    if backlog > 0 and obs.pollers > 0 and growing:
        backlog += (obs.add_rate - obs.dispatch_rate) * GROWTH_HORIZON
    workers = math.ceil(backlog / limits.target_backlog_per_worker)
    if limits.slots_per_worker > 0:
        # Max, not sum: an activity still waiting for a slot is in the backlog too.
        workers = max(workers, math.ceil(obs.activities_in_flight / limits.slots_per_worker))
    if obs.running_workflows > 0:
        workers = max(workers, 1)
    return workers


def _clamp(value: int, limits: Limits) -> int:
    return max(limits.min_replicas, min(limits.max_replicas, value))


def decide(
    obs: Observation, current: int, limits: Limits, history: History, now: float
) -> Decision:
    """Desired replicas for ``now``; updates ``history`` in place."""
    raw = need(obs, limits)
    if history.started is None:
        history.started = now
    if obs.backlog > 0 or obs.running_workflows > 0:
        history.last_active = now
    window = limits.scale_down_delay
    history.needs.append((now, raw))
    # The newest entry older than the window stays: it describes the load at the
    # window's start, which ticks spaced wider than the window would otherwise miss.
    older = [e for e in history.needs if now - e[0] > window]
    history.needs = older[-1:] + [e for e in history.needs if now - e[0] <= window]

    target = _clamp(raw, limits)
    if target > current:
        why = "from zero" if current == 0 else "up"
        load = f"backlog {obs.backlog}"
        if obs.backlog == 0 and obs.running_workflows > 0:
            load = f"{obs.running_workflows} running workflows"
        return Decision(target, raw, f"scale {why}: need {raw} for {load}")
    if target == current:
        return Decision(current, raw, "steady")
    if current > limits.max_replicas:
        return Decision(limits.max_replicas, raw, "above maxReplicas")
    if now - history.started < window:
        return Decision(current, raw, "holding: stabilisation window not yet observed")
    peak = _clamp(max(n for _, n in history.needs), limits)
    if peak >= current:
        return Decision(current, raw, f"holding: need reached {peak} within scaleDownDelay")
    return Decision(peak, raw, f"scale down: need at most {peak} for {window:g}s")


def decide_for(
    spec: AgentSpec,
    queue: QueueInfo,
    runs: Sequence[RunRow],
    current: int,
    history: History,
    now: datetime,
    starting: int = 0,
) -> Decision:
    """The decision for an agent's spec, task queue and runs (``history`` updated in place).
    ``starting``: runs this pass starts, running as soon as it has (no listing has them
    yet), so a pass that starts one never scales the last worker away from it."""
    w = spec.workers
    return decide(
        Observation(
            backlog=queue.backlog,
            backlog_age_seconds=queue.backlog_age_seconds,
            add_rate=queue.add_rate,
            dispatch_rate=queue.dispatch_rate,
            pollers=queue.pollers,
            running_workflows=sum(1 for r in runs if r.running) + starting,
            activities_in_flight=sum(1 for r in runs if r.running and r.phase in ACTIVITY_PHASES),
        ),
        current,
        Limits(
            w.min_replicas,
            w.max_replicas,
            w.target_backlog_per_worker,
            w.scale_down_delay.total_seconds(),
            w.max_concurrent_activities,
        ),
        history,
        now.timestamp(),
    )

"""The built-in autoscaler's decisions, table-driven over load, history and limits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from steadfast_contract.starter import RunRow
from steadfast_operator.autoscale import (
    Decision,
    History,
    Limits,
    Observation,
    decide,
    decide_for,
    need,
)
from steadfast_operator.spec import parse_spec
from steadfast_operator.status import QueueInfo

pytestmark = pytest.mark.unit

LIMITS = Limits(min_replicas=0, max_replicas=10, target_backlog_per_worker=5, scale_down_delay=60)


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (Observation(backlog=0), 0),
        (Observation(backlog=1), 1),
        (Observation(backlog=5), 1),
        (Observation(backlog=6), 2),
        (Observation(backlog=0, running_workflows=3), 1),
        (Observation(backlog=12, running_workflows=3), 3),
        # Growing backlog: 10 tasks now, net +1/s over the 10 s horizon -> 20 -> 4 workers.
        (Observation(backlog=10, add_rate=3.0, dispatch_rate=2.0, pollers=2), 4),
        # Without pollers nothing is dispatched: a burst is not growth.
        (Observation(backlog=10, add_rate=3.0, dispatch_rate=0.0), 2),
        # Draining backlog is not projected.
        (Observation(backlog=10, add_rate=1.0, dispatch_rate=5.0), 2),
        # A rate that is no number projects no growth (math.ceil(inf) raised).
        (Observation(backlog=10, add_rate=float("inf"), dispatch_rate=2.0, pollers=2), 2),
        (Observation(backlog=10, add_rate=float("nan"), dispatch_rate=2.0, pollers=2), 2),
        (Observation(backlog=10, add_rate=3.0, dispatch_rate=float("-inf"), pollers=2), 2),
    ],
)
def test_need(obs: Observation, expected: int) -> None:
    assert need(obs, LIMITS) == expected


@pytest.mark.parametrize(
    ("obs", "current", "limits", "expected"),
    [
        (Observation(backlog=1), 0, LIMITS, 1),
        (Observation(backlog=23), 0, LIMITS, 5),
        (Observation(backlog=500), 2, LIMITS, 10),
        (Observation(backlog=0), 0, Limits(2, 10, 5, 60), 2),
        (Observation(backlog=0), 12, LIMITS, 10),
        (Observation(backlog=3), 3, LIMITS, 3),
    ],
)
def test_first_decision(obs: Observation, current: int, limits: Limits, expected: int) -> None:
    assert decide(obs, current, limits, History(), now=1000.0).desired == expected


def run(
    ticks: list[tuple[float, Observation]], current: int, limits: Limits = LIMITS
) -> list[Decision]:
    history = History()
    out = []
    for t, obs in ticks:
        d = decide(obs, current, limits, history, now=t)
        current = d.desired
        out.append(d)
    return out


def test_scale_to_zero_only_after_full_idle_window() -> None:
    idle = Observation(backlog=0)
    ticks = [(0.0, Observation(backlog=10)), (5.0, idle), (30.0, idle), (64.0, idle), (66.0, idle)]
    assert [d.desired for d in run(ticks, current=0)] == [2, 2, 2, 2, 0]


def test_running_workflow_keeps_one_worker() -> None:
    busy = Observation(backlog=0, running_workflows=1)
    ticks = [(t, busy) for t in (0.0, 30.0, 61.0, 200.0)]
    assert [d.desired for d in run(ticks, current=3)] == [3, 3, 1, 1]


def test_brief_lull_does_not_flap() -> None:
    ticks = [
        (0.0, Observation(backlog=20)),
        (10.0, Observation(backlog=0)),
        (20.0, Observation(backlog=20)),
        (70.0, Observation(backlog=0)),
        (75.0, Observation(backlog=0)),
    ]
    assert [d.desired for d in run(ticks, current=0)] == [4, 4, 4, 4, 4]


def test_scale_down_goes_to_window_peak_not_to_min() -> None:
    ticks = [
        (0.0, Observation(backlog=40)),
        (30.0, Observation(backlog=10)),
        (61.0, Observation(backlog=10)),
        (100.0, Observation(backlog=0)),
        (200.0, Observation(backlog=0)),
    ]
    assert [d.desired for d in run(ticks, current=0)] == [8, 8, 8, 2, 0]


def test_down_respects_min_replicas() -> None:
    limits = Limits(1, 10, 5, 10)
    ticks = [(0.0, Observation(backlog=30)), (11.0, Observation(0)), (22.0, Observation(0))]
    assert [d.desired for d in run(ticks, current=1, limits=limits)] == [6, 6, 1]


def test_restart_never_scales_down_before_a_full_window() -> None:
    # A fresh History (operator restarted) seeing an idle queue with 4 workers holds them.
    history = History()
    d = decide(Observation(0), 4, LIMITS, history, now=1000.0)
    assert (d.desired, d.reason.startswith("holding")) == (4, True)
    assert decide(Observation(0), 4, LIMITS, history, now=1061.0).desired == 0


SLOTS = Limits(0, 10, 5, 60, slots_per_worker=5)


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        # Twenty calls in flight on five slots a worker: four workers are busy.
        (Observation(backlog=0, running_workflows=20, activities_in_flight=20), 4),
        (Observation(backlog=0, running_workflows=20, activities_in_flight=16), 4),
        (Observation(backlog=0, running_workflows=20, activities_in_flight=15), 3),
        (Observation(backlog=0, running_workflows=20, activities_in_flight=0), 1),
        # An activity waiting for a slot is backlog too: the larger need wins, not the sum.
        (Observation(backlog=20, running_workflows=20, activities_in_flight=20), 4),
        (Observation(backlog=30, running_workflows=20, activities_in_flight=10), 6),
    ],
)
def test_need_keeps_the_slots_in_use(obs: Observation, expected: int) -> None:
    assert need(obs, SLOTS) == expected


def test_no_scale_down_while_the_calls_in_flight_use_the_workers() -> None:
    streaming = Observation(backlog=0, running_workflows=20, activities_in_flight=20)
    saving = Observation(backlog=0, running_workflows=20, activities_in_flight=4)
    ticks = [(0.0, Observation(backlog=20, running_workflows=20))]
    ticks += [(t, streaming) for t in (5.0, 70.0, 200.0)]
    ticks += [(t, saving) for t in (210.0, 271.0)]
    assert [d.desired for d in run(ticks, current=0, limits=SLOTS)] == [4, 4, 4, 4, 4, 1]


def test_decide_for_counts_runs_in_an_activity_phase() -> None:
    spec = parse_spec(
        "ns",
        "agent",
        {
            "topics": ["t"],
            "search": {"endpoint": "http://search"},
            "workers": {"maxConcurrentActivities": 2, "targetBacklogPerWorker": 50},
        },
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    phases = ["Writing", "Writing", "Searching", "GeneratingQueries", "Saving"]
    phases += ["Pending", "AwaitingApproval"]
    runs = [RunRow(topic=p, workflow_id=f"w{i}", phase=p) for i, p in enumerate(phases)]
    runs.append(RunRow(topic="done", workflow_id="w9", phase="Writing", closed_at=now))
    d = decide_for(spec, QueueInfo(name="q", backlog=0), runs, 0, History(), now)
    # Five runs hold an activity on two slots a worker: three workers.
    assert (d.need, d.desired) == (3, 3)

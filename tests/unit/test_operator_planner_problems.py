"""The operator's decisions when something is wrong, and before deletion, as tables.

The companion of test_operator_planner.py: problems found by a change or a tick,
failed steps folded back into the observation, and the finalizer's plan.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.support.planning import (
    AGENT,
    CRON,
    DEFAULTS,
    ID,
    NOW,
    condition,
    observed,
    raw_spec,
    view,
)

from steadfast_operator import autoscale, planner
from steadfast_operator.planner import (
    Failure,
    Observed,
    ScheduleChange,
    Start,
    TemporalView,
)
from steadfast_operator.spec import InvalidSpec, validate
from steadfast_operator.status import Problem

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("obs", "reason", "retry", "kinds", "starts"),
    [
        # Never validated: the status reports it with the schema's defaults; no retry.
        (
            replace(
                observed(),
                spec=None,
                config=None,
                changed=True,
                problem=Problem("InvalidSpec", "spec.topics: too short"),
            ),
            "InvalidSpec",
            None,
            [],
            0,
        ),
        (
            observed(changed=True, problem=Problem("SecretMissing", "create it")),
            "SecretMissing",
            15.0,
            [],
            0,
        ),
        # The agent keeping the queue may go: the claim is judged again, not only on edit.
        (
            observed(changed=True, problem=Problem("TaskQueueShared", "q is taken")),
            "TaskQueueShared",
            15.0,
            [],
            0,
        ),
        # Temporal down on a change: children still go out, the change is retried.
        (
            observed(
                changed=True, temporal=TemporalView(problem=Problem("TemporalUnreachable", "x"))
            ),
            "TemporalUnreachable",
            10.0,
            ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"],
            0,
        ),
    ],
)
def test_a_change_that_cannot_work_says_why(
    obs: Observed, reason: str, retry: float | None, kinds: list[str], starts: int
) -> None:
    plan = planner.plan(obs)
    assert condition(plan, "Ready") == ("False", reason)
    assert plan.remember is not None
    assert plan.remember.reason == reason
    assert plan.retry == retry
    assert [c.kind for c in plan.children] == kinds
    assert (plan.schedules, plan.stop, len(plan.start)) == (None, (), starts)


def test_an_unpriced_model_renders_no_worker_and_starts_nothing() -> None:
    # As observe() does: a spec that fails validation is a problem, with no spec in force.
    raw = raw_spec(model={"name": "claude-unpriced-9"})
    with pytest.raises(InvalidSpec) as err:
        validate(AGENT, raw, DEFAULTS)
    problem = Problem(err.value.reason, err.value.detail)
    obs = replace(observed(), spec=None, config=None, changed=True, problem=problem)
    plan = planner.plan(replace(obs, temporal=view()))
    assert condition(plan, "Ready") == ("False", "InvalidSpec")
    assert plan.status is not None
    (ready,) = [c for c in plan.status["conditions"] if c["type"] == "Ready"]
    assert "spec.model.name" in ready["message"]
    assert "spec.model.pricing" in ready["message"]
    assert (plan.children, plan.start, plan.schedules, plan.retry) == ((), (), None, None)


def test_a_tick_keeps_the_changes_problem_and_leaves_temporal_alone() -> None:
    obs = observed(problem=Problem("SecretMissing", "create it"), temporal=view())
    plan = planner.plan(obs)
    assert condition(plan, "Ready") == ("False", "SecretMissing")
    assert (plan.start, plan.scale, plan.remember, plan.retry) == ((), None, None, None)


def test_a_refused_schedule_still_lets_topics_start() -> None:
    obs = observed(raw_spec(schedule="99 * * * *"), changed=True, temporal=view(), replicas=(0, 0))
    failed = obs.after(Failure(Problem("ScheduleInvalid", "bad cron"), "setup"))
    plan = planner.plan(failed)
    assert (plan.children, plan.schedules) == ((), None)
    assert plan.start == (Start("alpha", ID["alpha"]), Start("beta", ID["beta"]))
    assert condition(plan, "Ready") == ("False", "ScheduleInvalid")
    assert (plan.remember, plan.retry) == (Problem("ScheduleInvalid", "bad cron"), None)


def test_a_failed_start_is_reported_not_repeated() -> None:
    obs = observed(changed=True, temporal=view(), replicas=(0, 0))
    failed = obs.after(Failure(Problem("TemporalError", "boom"), "temporal"))
    plan = planner.plan(failed)
    assert (plan.children, plan.schedules, plan.start) == ((), None, ())
    assert condition(plan, "Ready") == ("False", "TemporalError")
    assert plan.remember is None  # the next tick tries again


def test_temporal_down_on_a_tick_keeps_the_known_runs() -> None:
    previous = {"runs": [{"topic": "alpha"}], "cost": {"totalUSD": 1.0}}
    down = TemporalView(problem=Problem("TemporalUnreachable", "down"))
    plan = planner.plan(observed(temporal=down, previous_status=previous))
    assert plan.status is not None
    assert "runs" not in plan.status
    assert "cost" not in plan.status
    assert condition(plan, "Ready") == ("False", "TemporalUnreachable")
    assert plan.retry is None


def test_nothing_to_report_before_the_first_reconcile() -> None:
    plan = planner.plan(replace(observed(), spec=None, config=None))
    assert (plan.status, plan.write_status) == (None, False)


# --- deletion ------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["Cancel", "Abandon"])
def test_deletion_deletes_every_schedule_and_applies_the_policy(policy: str) -> None:
    previous = {"runs": [{"topic": "old"}, {"topic": "alpha"}, {"phase": "Running"}]}
    obs = observed(
        raw_spec(schedule=CRON, deletionPolicy=policy), deleting=True, previous_status=previous
    )
    plan = planner.plan(obs)
    assert plan.schedules == ScheduleChange(delete=("alpha", "beta", "old"))
    assert plan.stop == ("alpha", "beta", "old")
    assert plan.deletion_policy == policy
    # Children go with the garbage collector; nothing else is written.
    assert (plan.children, plan.start, plan.status, plan.scale) == ((), (), None, None)


def test_a_failed_run_listing_holds_the_replicas() -> None:
    """The queue's statistics read, then the runs' listing failed: the view says no run
    and no backlog, as an idle agent's does. The autoscaler took it for one and, once
    its scale-down delay was filled with such ticks, scaled workers away from runs in
    flight (the audit). It now holds them, as while Temporal cannot be reached."""
    raw = raw_spec(workers={"minReplicas": 0, "scaleDownDelay": "60s"})
    t = NOW.timestamp()
    idle_for_a_minute = autoscale.History(needs=[(t - 70, 0), (t - 35, 0)], started=t - 3600)
    failed = replace(view(pollers=2), problem=Problem("TemporalError", "visibility unavailable"))
    done = {"startedTopics": ["alpha", "beta"]}  # both ran: nothing to start
    obs = observed(
        raw, replicas=(2, 2), temporal=failed, history=idle_for_a_minute, previous_status=done
    )
    plan = planner.plan(obs)
    assert plan.scale is None
    # The same tick with the listing read (and no run) does scale down: the contrast.
    plan = planner.plan(replace(obs, temporal=view(pollers=2)))
    assert plan.scale is not None
    assert plan.scale.desired == 0


def test_a_pass_that_starts_a_run_keeps_a_worker_for_it() -> None:
    """The replicas were decided from the runs listed before this pass's own starts: an
    agent idle past its scale-down delay, given a new topic, was scaled to zero in the
    pass that started the topic's run (a drain, then a cold start on a later tick)."""
    t = NOW.timestamp()
    idle_for_a_minute = autoscale.History(needs=[(t - 61, 0), (t - 30, 0)], started=t - 3600)
    obs = observed(replicas=(1, 1), temporal=view(), history=idle_for_a_minute)
    plan = planner.plan(obs)
    assert [s.topic for s in plan.start] == ["alpha", "beta"]
    assert plan.scale is not None
    assert plan.scale.desired == 1

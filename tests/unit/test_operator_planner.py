"""The operator's decisions, as tables: what an observation must turn into.

Every expected value is written out here (workflow ids, kinds, reasons,
replicas); none is computed with the planner or its building blocks.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from tests.support.planning import (
    CRON,
    ID,
    NOW,
    QUEUE,
    condition,
    live,
    observed,
    raw_spec,
    run,
    verbs,
    view,
)

from steadfast_contract.starter import RunRow
from steadfast_operator import planner
from steadfast_operator.planner import (
    Scale,
    ScheduleChange,
    Start,
    TemporalView,
)
from steadfast_operator.status import Problem

pytestmark = pytest.mark.unit

# --- first reconcile, resync, spec edit -------------------------------------------


def test_first_reconcile_creates_children_starts_every_topic_and_writes_status() -> None:
    plan = planner.plan(observed(changed=True, temporal=view()))
    assert verbs(plan) == [
        ("create", "ConfigMap"),
        ("create", "Deployment"),
        ("create", "Service"),
        ("create", "PodDisruptionBudget"),
    ]
    assert [c.name for c in plan.children] == [
        "watch-worker-config",
        "watch-worker",
        "watch-worker",
        "watch-worker",
    ]
    assert plan.schedules == ScheduleChange(delete=("alpha", "beta"))  # no cron: none kept
    assert plan.stop == ()
    assert plan.start == (Start("alpha", ID["alpha"]), Start("beta", ID["beta"]))
    assert plan.pause is None
    # The Deployment it creates starts at minReplicas (0), and the runs this pass starts
    # need a worker: scaled up at once, not on the tick that first lists them.
    assert plan.scale == Scale(0, 1, "scale from zero: need 1 for 2 running workflows")
    assert plan.write_status
    assert condition(plan, "Ready") == ("True", "Reconciled")
    assert plan.status is not None
    assert plan.status["observedGeneration"] == 2
    assert plan.status["workers"]["desired"] == 1
    assert plan.status["taskQueue"]["name"] == QUEUE
    assert (plan.remember, plan.retry) == (None, None)


def test_resync_with_nothing_changed_is_an_empty_plan() -> None:
    obs = observed(temporal=view(run("alpha"), run("beta")), replicas=(1, 1))
    first = planner.plan(obs)
    assert first.write_status
    assert first.status is not None
    again = planner.plan(replace(obs, previous_status=first.status))
    assert again.empty
    assert (again.children, again.start, again.pause, again.write_status) == ((), (), None, False)
    assert again.scale == Scale(1, 1, "holding: stabilisation window not yet observed")


def test_resume_with_children_in_place_writes_no_child() -> None:
    raw = raw_spec()
    obs = observed(raw, changed=True, children=live(raw), replicas=(0, 0), temporal=view())
    plan = planner.plan(obs)
    assert plan.children == ()
    # Schedules are not observed: a change always restates them (deleting none is free).
    assert plan.schedules == ScheduleChange(delete=("alpha", "beta"))


def test_spec_edit_replaces_the_config_and_rolls_the_deployment() -> None:
    before = live(raw_spec())
    dep = before["Deployment"]
    assert dep is not None
    before["Deployment"] = {**dep, "spec": {**dep["spec"], "replicas": 1}}  # the autoscaler's
    after = raw_spec(model={"baseURL": "http://gateway.example:8080"})
    plan = planner.plan(
        observed(after, changed=True, children=before, replicas=(1, 1), temporal=view())
    )
    assert verbs(plan) == [("replace", "ConfigMap"), ("replace", "Deployment")]
    assert plan.children[0].why == ".data.worker.yaml"
    assert plan.children[1].why == ".spec.template.metadata.annotations.steadfast.dev/config-hash"
    deployment = plan.children[1].body
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 1  # the autoscaler's, kept


@pytest.mark.parametrize(
    "edit",
    [
        {"budget": {"maxUSDPerDay": 7.5}},
        {"model": {"maxTokens": 1000}},
        {"retryPolicies": {"llm": {"maximumAttempts": 9}}},
    ],
)
def test_an_edit_the_worker_never_reads_replaces_the_config_but_rolls_nothing(
    edit: dict[str, Any],
) -> None:
    before = live(raw_spec())
    plan = planner.plan(observed(raw_spec(**edit), changed=True, children=before, temporal=view()))
    # The ConfigMap documents the agent; running workers never read these fields.
    assert verbs(plan) == [("replace", "ConfigMap")]


def test_optional_children_no_longer_wanted_are_deleted_if_ours() -> None:
    before = live(raw_spec(workers={"autoscaler": "keda"}))
    after = raw_spec(workers={"maxReplicas": 1})
    theirs = {"metadata": {"ownerReferences": [{"uid": "someone-else"}]}}
    plan = planner.plan(
        observed(
            after,
            changed=True,
            children={**before, "TriggerAuthentication": theirs},
            temporal=view(),
        )
    )
    assert ("delete", "PodDisruptionBudget") in verbs(plan)
    assert ("delete", "ScaledObject") in verbs(plan)
    assert ("delete", "TriggerAuthentication") not in verbs(plan)


# --- topics and Schedules ---------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("", ScheduleChange(delete=("alpha", "beta", "old"))),
        (CRON, ScheduleChange(upsert=("alpha", "beta"), delete=("old",), cron=CRON)),
    ],
)
def test_topic_removed_is_stopped_and_its_schedule_deleted(
    schedule: str, expected: ScheduleChange
) -> None:
    previous = {"runs": [{"topic": "old"}, {"topic": "alpha"}]}
    plan = planner.plan(
        observed(
            raw_spec(schedule=schedule),
            changed=True,
            children=live(raw_spec(schedule=schedule)),
            previous_status=previous,
            temporal=view(run("alpha"), run("beta")),
        )
    )
    assert plan.stop == ("old",)
    assert plan.deletion_policy == "Cancel"
    assert plan.schedules == expected
    assert plan.start == ()


@pytest.mark.parametrize(
    ("runs", "paused", "start", "pause", "budget"),
    [
        # Spent today: no start, Schedules paused, the condition says so.
        (
            (run("alpha", 1.2),),
            False,
            (),
            ScheduleChange(upsert=("alpha", "beta"), cron=CRON, paused=True),
            ("True", "DailyBudgetReached"),
        ),
        # Still spent and already paused: nothing to write to Temporal.
        ((run("alpha", 1.2),), True, (), None, ("True", "DailyBudgetReached")),
        # The next UTC day: Schedules resume and the topic not yet run starts.
        (
            (run("alpha", 1.2, started=NOW - timedelta(days=1)),),
            True,
            (Start("beta", ID["beta"]),),
            ScheduleChange(upsert=("alpha", "beta"), cron=CRON, paused=False),
            ("False", "WithinBudget"),
        ),
        # Within budget, not paused: only the missing topic starts.
        (
            (run("alpha", 0.2),),
            False,
            (Start("beta", ID["beta"]),),
            None,
            ("False", "WithinBudget"),
        ),
    ],
)
def test_daily_budget_gates_starts_and_pauses_schedules(
    runs: tuple[RunRow, ...],
    paused: bool,
    start: tuple[Start, ...],
    pause: ScheduleChange | None,
    budget: tuple[str, str],
) -> None:
    plan = planner.plan(
        observed(raw_spec(schedule=CRON), temporal=view(*runs), schedules_paused=paused)
    )
    assert plan.start == start
    assert plan.pause == pause
    assert condition(plan, "BudgetExhausted") == budget
    assert plan.schedules is None  # a tick never restates the Schedules themselves


# --- replicas ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("autoscaler", "scale", "desired"),
    [
        ("builtin", Scale(1, 3, "scale up: need 3 for backlog 12"), 3),
        ("keda", None, 1),
        ("none", None, 1),
    ],
)
def test_only_the_builtin_autoscaler_sets_replicas(
    autoscaler: str, scale: Scale | None, desired: int
) -> None:
    raw = raw_spec(workers={"autoscaler": autoscaler, "targetBacklogPerWorker": 4})
    plan = planner.plan(
        observed(raw, temporal=view(run("alpha"), run("beta"), backlog=12), replicas=(1, 1))
    )
    assert plan.scale == scale
    assert plan.status is not None
    assert plan.status["workers"]["desired"] == desired
    if scale is not None:
        assert plan.history is not None
        assert plan.history.needs == [(NOW.timestamp(), 3)]


def test_no_scaling_without_a_deployment_or_statistics() -> None:
    assert planner.plan(observed(temporal=view(backlog=12))).scale is None
    unread = TemporalView(problem=Problem("TemporalUnreachable", "down"))
    assert planner.plan(observed(temporal=unread, replicas=(1, 1))).scale is None


def test_the_observed_history_is_not_modified() -> None:
    obs = observed(temporal=view(backlog=12), replicas=(1, 1))
    planner.plan(obs)
    assert obs.history.needs == []


# --- problems ------------------------------------------------------------------------

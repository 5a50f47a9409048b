"""The operator's decisions, as tables: what an observation must turn into.

Every expected value is written out here (workflow ids, kinds, reasons,
replicas); none is computed with the planner or its building blocks.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from steadfast_contract.starter import RunRow
from steadfast_operator import planner, render
from steadfast_operator.planner import (
    Failure,
    Observed,
    Plan,
    Scale,
    ScheduleChange,
    Start,
    TemporalView,
)
from steadfast_operator.spec import validate, worker_config
from steadfast_operator.status import Problem, QueueInfo

pytestmark = pytest.mark.unit

AGENT = render.AgentRef(name="watch", namespace="research", uid="uid-1")
DEFAULTS = render.Defaults(image="steadfast/worker:test", temporal_address="temporal:7233")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
QUEUE = "steadfast-research-watch"
ID = {
    "alpha": "research-research-watch-alpha-b2adfec925",
    "beta": "research-research-watch-beta-6b8afc629c",
    "old": "research-research-watch-old-c9c6a53f75",
}
CRON = "0 6 * * 1"


def raw_spec(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "topics": ["alpha", "beta"],
        "search": {"endpoint": "http://search/"},
        "budget": {"maxUSDPerRun": 1.0, "maxUSDPerDay": 1.0},
    }
    raw.update(over)
    return raw


def observed(raw: dict[str, Any] | None = None, **kw: Any) -> Observed:
    raw = raw or raw_spec()
    spec = validate(AGENT, raw, DEFAULTS)
    base = Observed(
        agent=AGENT,
        now=NOW,
        generation=2,
        defaults=DEFAULTS,
        spec=spec,
        config=worker_config(AGENT, spec, DEFAULTS),
    )
    return replace(base, **kw)


def run(topic: str, cost: float = 0.1, *, started: datetime = NOW, done: bool = True) -> RunRow:
    return RunRow(
        topic=topic,
        workflow_id=ID[topic],
        run_id=f"run-{topic}",
        phase="Completed" if done else "Writing",
        started_at=started - timedelta(minutes=10),
        closed_at=started - timedelta(minutes=5) if done else None,
        cost_usd=cost,
    )


def view(*runs: RunRow, backlog: int = 0, pollers: int = 1) -> TemporalView:
    return TemporalView(QueueInfo(QUEUE, backlog=backlog, pollers=pollers), tuple(runs))


def live(raw: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """What the cluster holds after the operator applied ``raw`` (as the API server keeps it)."""
    spec = validate(AGENT, raw, DEFAULTS)
    objs = {o["kind"]: o for o in render.children(AGENT, spec, DEFAULTS)}
    for kind in ("ScaledObject", "TriggerAuthentication", "PodDisruptionBudget"):
        objs.setdefault(kind, None)  # type: ignore[arg-type]
    return dict(objs)


def verbs(plan: Plan) -> list[tuple[str, str]]:
    return [(c.verb, c.kind) for c in plan.children]


def condition(plan: Plan, type_: str) -> tuple[str, str]:
    assert plan.status is not None
    (found,) = [c for c in plan.status["conditions"] if c["type"] == type_]
    return found["status"], found["reason"]


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
    # The Deployment it creates starts at minReplicas (0): nothing waits, nothing to scale.
    assert plan.scale == Scale(0, 0, "steady")
    assert plan.write_status
    assert condition(plan, "Ready") == ("True", "Reconciled")
    assert plan.status is not None
    assert plan.status["observedGeneration"] == 2
    assert plan.status["workers"]["desired"] == 0
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
    after = raw_spec(model={"maxTokens": 1000})
    plan = planner.plan(
        observed(after, changed=True, children=before, replicas=(1, 1), temporal=view())
    )
    assert verbs(plan) == [("replace", "ConfigMap"), ("replace", "Deployment")]
    assert plan.children[0].why == ".data.worker.yaml"
    assert plan.children[1].why == ".spec.template.metadata.annotations.steadfast.dev/config-hash"
    deployment = plan.children[1].body
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 1  # the autoscaler's, kept


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

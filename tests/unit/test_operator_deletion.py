"""Deletion's decisions, as tables: wait for Temporal or not, how long, what the status says,
and which Schedules and runs go (found in Temporal, not only in the status).

Every expected value is written out here (delays, ids, reasons); none is computed
with the code under test.
"""

from __future__ import annotations

import pytest
from temporalio.service import RPCError, RPCStatusCode
from tests.support.planning import CRON, ID, NOW, observed, raw_spec, view

from steadfast_contract import models
from steadfast_operator import deletion, planner, schedules, workflows
from steadfast_operator.planner import ScheduleChange, TemporalView
from steadfast_operator.status import Problem

pytestmark = pytest.mark.unit

DOWN = Problem("TemporalUnreachable", "cannot connect to Temporal at t:7233: refused")


@pytest.mark.parametrize(
    ("retry", "delay"),
    [(0, 5.0), (1, 10.0), (2, 20.0), (3, 40.0), (4, 60.0), (9, 60.0), (10_000, 60.0)],
)
def test_the_retry_delay_doubles_up_to_a_minute_and_never_ends(retry: int, delay: float) -> None:
    assert deletion.retry_delay(retry) == delay


@pytest.mark.parametrize(
    ("policy", "retry", "wait", "delay"),
    [
        # Cancel: the finalizer stays, however many tries it takes.
        ("Cancel", 0, True, 5.0),
        ("Cancel", 6, True, 60.0),
        ("Cancel", 500, True, 60.0),
        # Abandon: one try, then the agent goes (its Schedules and runs stay).
        ("Abandon", 0, False, 0.0),
    ],
)
def test_a_deletion_without_temporal_waits_unless_abandoned(
    policy: str, retry: int, wait: bool, delay: float
) -> None:
    decision = deletion.blocked(policy, "t:7233", "default", DOWN, retry)
    assert (decision.wait, decision.delay) == (wait, delay)
    assert "t:7233" in decision.message
    assert "namespace default" in decision.message
    assert "refused" in decision.message


def test_the_waiting_message_says_what_is_left_and_the_way_out() -> None:
    message = deletion.blocked("Cancel", "t:7233", "default", DOWN, 0).message
    assert message.startswith("deleting: waiting for Temporal at t:7233 (namespace default)")
    assert "delete this agent's Schedules and cancel its running workflows" in message
    assert "spec.deletionPolicy: Abandon" in message


def test_the_waiting_status_replaces_ready_and_keeps_the_other_conditions() -> None:
    previous = {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Reconciled", "message": ""},
            {"type": "BudgetExhausted", "status": "False", "reason": "WithinBudget"},
        ],
        "runs": [{"topic": "alpha"}],
    }
    doc = deletion.waiting_status(previous, "waiting", NOW, 3)
    assert list(doc) == ["conditions"]  # nothing else is touched
    ready, budget = doc["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        "Ready",
        "False",
        "WaitingForTemporal",
    )
    assert (ready["message"], ready["observedGeneration"]) == ("waiting", 3)
    assert ready["lastTransitionTime"] == "2026-11-24T12:00:00Z"
    assert budget == {"type": "BudgetExhausted", "status": "False", "reason": "WithinBudget"}


# --- which Schedules and runs go ------------------------------------------------------

OLD_SCHEDULE = ID["old"] + "-schedule"


@pytest.mark.parametrize("policy", ["Cancel", "Abandon"])
def test_deletion_deletes_schedules_found_in_temporal_beyond_the_status(policy: str) -> None:
    # "old" was removed long ago: no run of it is listed, but its Schedule is found.
    obs = observed(
        raw_spec(schedule=CRON, deletionPolicy=policy),
        deleting=True,
        previous_status={"runs": [{"topic": "alpha"}]},
        temporal=TemporalView(schedules={OLD_SCHEDULE: "old"}),
    )
    plan = planner.plan(obs)
    assert plan.schedules == ScheduleChange(delete=("alpha", "beta", "old"))
    assert plan.stop == ("alpha", "beta", "old")
    # Runs of topics nobody lists are looked up in Temporal only to cancel them.
    assert plan.stop_unlisted is (policy == "Cancel")
    assert plan.deletion_policy == policy


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # No cron: exactly the Schedules found go, the current topics' included.
        ("", ScheduleChange(delete=("alpha", "old"))),
        (CRON, ScheduleChange(upsert=("alpha", "beta"), delete=("old",), cron=CRON)),
    ],
)
def test_an_edit_deletes_a_schedule_whose_topic_no_status_lists(
    schedule: str, expected: ScheduleChange
) -> None:
    found = {ID["alpha"] + "-schedule": "alpha", OLD_SCHEDULE: "old"}
    plan = planner.plan(
        observed(
            raw_spec(schedule=schedule),
            changed=True,
            previous_status={"runs": [{"topic": "alpha"}]},
            temporal=TemporalView(view().queue, schedules=found),
        )
    )
    assert plan.schedules == expected
    assert plan.stop == ("old",)


def _input(topic: str, agent: str = "watch", namespace: str = "research") -> object:
    return models.ResearchInput(topic=topic, agent=agent, namespace=namespace)


@pytest.mark.parametrize(
    ("sched_id", "given", "topic"),
    [
        (OLD_SCHEDULE, _input("old"), "old"),
        # A sibling agent whose name extends this one's: same prefix, not ours.
        ("research-research-watch-eu-x-0123456789-schedule", _input("x", "watch-eu"), None),
        # The same agent name in another namespace.
        (OLD_SCHEDULE, _input("old", namespace="other"), None),
        # An input that does not derive the listed id.
        (OLD_SCHEDULE, _input("alpha"), None),
        # Another workflow's input altogether.
        (OLD_SCHEDULE, {"topic": "old"}, None),
    ],
)
def test_a_listed_schedule_is_ours_only_if_its_input_derives_its_id(
    sched_id: str, given: object, topic: str | None
) -> None:
    assert schedules.owned(sched_id, "research", "watch", given) == topic


@pytest.mark.parametrize(
    ("phase", "ending"),
    [
        # Cancelled mid-step: the cancel reaches the call at its next heartbeat, and the
        # run then saves what it gathered. Waited for, as a run already saving.
        (models.Phase.WRITING, True),
        (models.Phase.RESEARCHING, True),
        (models.Phase.GENERATING_QUERIES, True),
        (models.Phase.SEARCHING, True),
        (models.Phase.AWAITING_BUDGET, True),
        (models.Phase.SAVING, True),
        ("SomePhaseOfANewerRelease", True),
        (models.Phase.CANCELLED, False),
        (models.Phase.COMPLETED, False),
        (models.Phase.FAILED, False),
        (models.Phase.BUDGET_EXHAUSTED, False),
    ],
)
def test_a_cancelled_run_is_waited_for_until_its_phase_is_terminal(
    phase: models.Phase | str, ending: bool
) -> None:
    assert workflows.still_ending(phase) is ending


@pytest.mark.parametrize(
    ("status", "moot"),
    [
        (RPCStatusCode.NOT_FOUND, True),  # closed since it was listed
        (RPCStatusCode.UNAVAILABLE, False),
        (RPCStatusCode.DEADLINE_EXCEEDED, False),
        (RPCStatusCode.RESOURCE_EXHAUSTED, False),
        (RPCStatusCode.PERMISSION_DENIED, False),
    ],
)
def test_only_a_run_that_is_gone_needs_no_cancel_again(status: RPCStatusCode, moot: bool) -> None:
    assert workflows.cancel_moot(RPCError("refused", status, b"")) is moot

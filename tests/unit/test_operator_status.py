"""Building a ResearchAgent's status: conditions, runs, cost and the daily budget."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from steadfast_contract import crdschema
from steadfast_contract.starter import RunRow
from steadfast_operator import status as st
from steadfast_operator.spec import parse_spec

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SPEC = parse_spec("ns", "a", {"topics": ["x", "y"], "budget": {"maxUSDPerDay": 1.0}})


def run(topic: str, cost: float, started: datetime, closed: bool = True) -> RunRow:
    return RunRow(
        topic=topic,
        workflow_id=f"wf-{topic}",
        run_id=f"run-{topic}-{started.isoformat()}",
        phase="Completed" if closed else "Writing",
        started_at=started,
        closed_at=started + timedelta(minutes=1) if closed else None,
        cost_usd=cost,
        llm_calls=2,
        retries=1,
        report_id=f"rep-{topic}" if closed else "",
        input_tokens=100,
        output_tokens=50,
    )


def build(runs: list[RunRow], **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "generation": 3,
        "spec": SPEC,
        "runs": runs,
        "queue": st.QueueInfo(name="q", backlog=7, backlog_age_seconds=4.21, pollers=2),
        "desired": 2,
        "ready": 2,
        "selector": "s",
        "problem": None,
        "previous": {},
        "now": NOW,
    }
    args.update(kw)
    return st.build_status(**args)


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_a_run_in_its_last_phase_counts_as_finished_while_temporal_closes_it() -> None:
    # The workflow sets Completed, then records the run before Temporal closes it:
    # in between, the summary used to say 0/1 beside a run listed as Completed.
    closing = replace(run("x", 0.2, NOW), closed_at=None)
    s = build([closing, run("y", 0.1, NOW, closed=False)])
    assert [r["phase"] for r in s["runs"]] == ["Completed", "Writing"]
    assert s["runsSummary"] == "1/2"
    assert conds(s)["Ready"]["message"] == "2 topics, 1 running, 1 finished"


def test_healthy_agent() -> None:
    s = build([run("x", 0.2, NOW - timedelta(hours=1)), run("y", 0.1, NOW, closed=False)])
    c = conds(s)
    assert s["observedGeneration"] == 3
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", "Reconciled")
    assert c["WorkersAvailable"]["status"] == "True"
    assert c["BudgetExhausted"]["status"] == "False"
    assert s["runsSummary"] == "1/2"
    assert s["taskQueue"]["backlog"] == 7
    assert s["taskQueue"]["runningWorkflows"] == 1
    assert s["cost"]["totalUSD"] == pytest.approx(0.3)
    assert s["cost"]["inputTokens"] == 200
    first = s["runs"][0]
    assert first["topic"] == "y"
    assert "closedAt" not in first


def test_problem_sets_ready_false_with_reason() -> None:
    s = build([], problem=st.Problem("SecretMissing", "Secret ns/anthropic not found"))
    ready = conds(s)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "SecretMissing")
    assert "anthropic" in ready["message"]


def test_daily_budget_counts_only_today() -> None:
    yesterday = NOW - timedelta(days=1)
    runs = [run("x", 5.0, yesterday), run("y", 0.5, NOW)]
    assert st.cost_today(runs, NOW) == pytest.approx(0.5)
    assert not st.budget_exhausted(SPEC, runs, NOW)
    runs.append(run("x", 0.6, NOW - timedelta(hours=2)))
    assert st.budget_exhausted(SPEC, runs, NOW)
    c = conds(build(runs))["BudgetExhausted"]
    assert (c["status"], c["reason"]) == ("True", "DailyBudgetReached")


def test_transition_time_moves_only_on_change() -> None:
    first = build([])
    later = NOW + timedelta(minutes=5)
    same = build([], previous=first, now=later)
    assert conds(same)["Ready"]["lastTransitionTime"] == conds(first)["Ready"]["lastTransitionTime"]
    flipped = build([], previous=first, now=later, problem=st.Problem("X", "y"))
    assert conds(flipped)["Ready"]["lastTransitionTime"] == "2026-11-24T12:05:00Z"


@pytest.mark.parametrize(
    ("desired", "ready", "status", "reason"),
    [
        (0, 0, "False", "ScaledToZero"),
        (2, 0, "False", "WorkersNotReady"),
        (2, 1, "True", "MinimumReplicasAvailable"),
    ],
)
def test_workers_condition(desired: int, ready: int, status: str, reason: str) -> None:
    c = conds(build([], desired=desired, ready=ready))["WorkersAvailable"]
    assert (c["status"], c["reason"]) == (status, reason)


def test_unchanged_status_needs_no_write() -> None:
    s = build([run("x", 0.2, NOW)])
    assert not st.differs(s, build([run("x", 0.2, NOW)], previous=s))
    assert st.differs(s, build([run("x", 0.3, NOW)], previous=s))


def test_volatile_fields_are_throttled() -> None:
    s = build([], queue=st.QueueInfo(name="q", backlog=3, backlog_age_seconds=1.0))
    older = build([], queue=st.QueueInfo(name="q", backlog=3, backlog_age_seconds=6.0))
    assert not st.needs_write(s, older, since_last_write=5.0)
    assert st.needs_write(s, older, since_last_write=31.0)
    assert st.needs_write(s, older, since_last_write=None)
    grown = build([], queue=st.QueueInfo(name="q", backlog=4, backlog_age_seconds=6.0))
    assert st.needs_write(s, grown, since_last_write=1.0)
    assert not st.needs_write(s, s, since_last_write=None)


def test_listed_runs_put_each_topics_newest_first() -> None:
    # "x" reruns every minute; "y" ran once, long ago. Its only run must still be
    # listed right after x's newest, ahead of x's older runs, and the cap holds.
    reruns = [run("x", 0.1, NOW - timedelta(minutes=i)) for i in range(st.MAX_RUNS_LISTED + 5)]
    once = run("y", 0.1, NOW - timedelta(days=2))
    listed = st.latest_runs([*reversed(reruns), once])
    assert [r.run_id for r in listed[:3]] == [reruns[0].run_id, once.run_id, reruns[1].run_id]
    assert len(listed) == st.MAX_RUNS_LISTED
    starts = [r.started_at for r in listed[1:] if r.topic == "x"]
    assert starts == sorted(starts, reverse=True)


def test_condition_messages_stay_well_under_the_schema_limit() -> None:
    # A Kubernetes API exception with its whole response body can run to many KB;
    # the CRD caps a condition message at 2048 characters and refuses the status write.
    huge = st.Problem("ReconcileError", "Kubernetes API call failed, retrying: " + "x" * 5000)
    doc = build([], problem=huge)
    (ready,) = [c for c in doc["conditions"] if c["type"] == "Ready"]
    assert len(ready["message"]) <= 1024
    assert ready["message"].startswith("Kubernetes API call failed, retrying: xxx")
    assert ready["message"].endswith("…")


def test_short_condition_messages_are_kept_whole() -> None:
    doc = build([], problem=st.Problem("SecretMissing", "create it"))
    (ready,) = [c for c in doc["conditions"] if c["type"] == "Ready"]
    assert ready["message"] == "create it"


def test_the_status_says_what_resuming_saved_each_run_and_the_agent() -> None:
    saved = replace(run("x", 0.2, NOW), avoided_usd=0.0012)
    twice = replace(run("y", 0.3, NOW - timedelta(hours=1)), avoided_usd=0.0030)
    s = build([saved, twice, run("x", 0.1, NOW - timedelta(hours=2))])
    assert s["avoidedUSD"] == pytest.approx(0.0042)
    assert {(r["topic"], r["avoidedUSD"]) for r in s["runs"]} == {
        ("x", 0.0012),
        ("y", 0.003),
        ("x", 0.0),
    }


def test_every_status_field_written_is_in_the_crd_schema() -> None:
    # The API server prunes fields the schema does not name: they would vanish unseen.
    schema = crdschema.status_schema()["properties"]
    s = build([replace(run("x", 0.2, NOW), avoided_usd=0.0012)])
    assert set(s) <= set(schema)
    assert set(s["runs"][0]) <= set(schema["runs"]["items"]["properties"])
    assert set(s["cost"]) <= set(schema["cost"]["properties"])


def test_a_chain_of_runs_continued_as_new_is_counted_once() -> None:
    """A deep run carries its status into the run it continues as: the chain's last
    run says the whole chain's figures. Summing every run of the chain counted the
    earlier spend again, and the day read as spent: DailyBudgetReached, no start,
    Schedules paused, while the day's ledger had room (the audit)."""
    first = RunRow(
        topic="x",
        workflow_id="wf-x",
        run_id="r1",
        phase="ContinuedAsNew",
        started_at=NOW - timedelta(minutes=30),
        closed_at=NOW - timedelta(minutes=10),
        cost_usd=0.50,
        avoided_usd=0.10,
        input_tokens=1000,
        output_tokens=100,
    )
    second = RunRow(
        topic="x",
        workflow_id="wf-x",
        run_id="r2",
        phase="Researching",
        started_at=NOW - timedelta(minutes=10),
        cost_usd=0.70,
        avoided_usd=0.10,
        input_tokens=1500,
        output_tokens=150,
    )
    other = run("y", 0.05, NOW - timedelta(hours=1))
    status = build([first, second, other], ledger_usd=0.75)
    assert status["cost"]["totalUSD"] == 0.75
    assert status["cost"]["todayUSD"] == 0.75
    assert (status["cost"]["inputTokens"], status["cost"]["outputTokens"]) == (1600, 200)
    assert status["avoidedUSD"] == 0.10
    assert conds(status)["BudgetExhausted"]["status"] == "False"
    assert not st.budget_exhausted(SPEC, [first, second, other], NOW, 0.75)
    # A continued run whose next run the listing cut off still counts itself.
    assert st.cost_today([first, other], NOW) == 0.55

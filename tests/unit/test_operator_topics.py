"""Which topics the operator starts, records and stops, as tables (planner.plan).

A finished topic is never researched again by the operator, even once Temporal
forgot its run (retention, ``temporal workflow delete``): the status records it.
A topic added and removed between two status ticks is still found and stopped.
Task queues and visibility queries of two agents never overlap.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from tests.support.planning import (
    AGENT,
    CRON,
    DEFAULTS,
    ID,
    condition,
    live,
    observed,
    raw_spec,
    run,
    verbs,
    view,
)

from steadfast_contract import ids
from steadfast_operator import planner, render, workflows
from steadfast_operator.spec import InvalidSpec, validate, worker_config
from steadfast_operator.status import Problem

pytestmark = pytest.mark.unit


def started(plan: planner.Plan) -> list[str]:
    return [s.topic for s in plan.start]


def recorded(plan: planner.Plan) -> list[str]:
    assert plan.status is not None
    return list(plan.status.get("startedTopics") or [])


@pytest.mark.parametrize(
    ("previous", "runs", "starts", "record"),
    [
        # First pass: both topics start, and the pass that starts them records them.
        ({}, (), ["alpha", "beta"], ["alpha", "beta"]),
        # alpha's run is in Temporal (started by an older operator or by `steadfast run`).
        ({}, (run("alpha"),), ["beta"], ["alpha", "beta"]),
        # alpha finished and Temporal deleted it: the record says it was done.
        ({"startedTopics": ["alpha"]}, (), ["beta"], ["alpha", "beta"]),
        # Both done and both forgotten by Temporal: nothing starts, the record stays.
        ({"startedTopics": ["alpha", "beta"]}, (), [], ["alpha", "beta"]),
    ],
)
def test_a_topic_done_is_never_started_again(
    previous: dict[str, Any], runs: tuple[Any, ...], starts: list[str], record: list[str]
) -> None:
    plan = planner.plan(observed(temporal=view(*runs), previous_status=previous))
    assert started(plan) == starts
    assert recorded(plan) == record


def test_the_record_is_bounded_by_the_spec_and_kept_until_the_removal_is_done() -> None:
    # "gone" was started (recorded) and removed from the spec before any status tick
    # listed a run of it: the change stops it and deletes its Schedule, then forgets it.
    previous = {"startedTopics": ["alpha", "beta", "gone"]}
    obs = observed(raw_spec(schedule=CRON), changed=True, temporal=view(), previous_status=previous)
    plan = planner.plan(obs)
    assert plan.stop == ("gone",)
    assert plan.schedules is not None
    assert plan.schedules.delete == ("gone",)
    assert recorded(plan) == ["alpha", "beta"]

    # The removal failed (Temporal refused): the executor plans again, settled; the
    # topic stays recorded so the next change tries again.
    failed = obs.after(planner.Failure(Problem("ReconcileError", "x"), "setup"))
    assert recorded(planner.plan(failed)) == ["alpha", "beta", "gone"]

    # A tick never drops it either (only a change stops topics).
    tick = planner.plan(observed(temporal=view(), previous_status=previous))
    assert recorded(tick) == ["alpha", "beta", "gone"]


def test_sixty_scheduled_topics_one_removed_one_added_and_removed_within_a_tick() -> None:
    topics = [f"topic {i}" for i in range(60)]
    previous = {"startedTopics": sorted(topics)}
    # Edit 1 adds "flash": the change starts it and records it in the same status write.
    add = planner.plan(
        observed(
            raw_spec(topics=[*topics, "flash"], schedule=CRON),
            changed=True,
            temporal=view(),
            previous_status=previous,
        )
    )
    assert started(add) == ["flash"]
    assert add.schedules is not None
    assert "flash" in add.schedules.upsert
    assert "flash" in recorded(add)
    # Edit 2, before any tick lists a run of it: "flash" and "topic 7" go. Temporal's
    # schedule listing may not show flash's Schedule yet; the record names it.
    assert add.status is not None
    remaining = [t for t in topics if t != "topic 7"]
    remove = planner.plan(
        observed(
            raw_spec(topics=remaining, schedule=CRON),
            changed=True,
            temporal=view(),
            previous_status=add.status,
        )
    )
    assert remove.stop == ("flash", "topic 7")
    assert remove.schedules is not None
    assert remove.schedules.delete == ("flash", "topic 7")
    assert len(remove.schedules.upsert) == 59
    assert started(remove) == []
    assert recorded(remove) == sorted(remaining)


def test_deletion_stops_topics_only_the_record_knows() -> None:
    obs = observed(deleting=True, previous_status={"startedTopics": ["alpha", "flash"]})
    plan = planner.plan(obs)
    assert plan.stop == ("alpha", "beta", "flash")


@pytest.mark.parametrize(
    ("queue_in_status", "explicit", "expected", "warned"),
    [
        # An agent running before the unambiguous default keeps the queue its runs use.
        ("steadfast-research-watch", "", "steadfast-research-watch", ""),
        # A new agent (or one whose status shows the new default) gets the new default.
        (None, "", "steadfast.research.watch", ""),
        ("steadfast.research.watch", "", "steadfast.research.watch", ""),
        # A new agent with a queue of its own gets it.
        (None, "mine", "mine", ""),
        ("mine", "mine", "mine", ""),
        # A queue edited after runs started is not followed (an older CRD let it
        # through): the runs and the day's ledger stay where they are, and it is said.
        ("steadfast-research-watch", "mine", "steadfast-research-watch", "mine"),
        ("steadfast.research.watch", "mine", "steadfast.research.watch", "mine"),
        ("mine", "", "mine", "steadfast.research.watch"),
        ("mine", "theirs", "mine", "theirs"),
    ],
)
def test_an_agent_already_running_keeps_its_task_queue(
    queue_in_status: str | None, explicit: str, expected: str, warned: str
) -> None:
    previous = {"taskQueue": {"name": queue_in_status}} if queue_in_status else {}
    spec = observed(raw_spec(temporal={"taskQueue": explicit})).spec
    assert spec is not None
    pinned = planner.pin_task_queue(AGENT, spec, previous)
    assert render.task_queue(AGENT, pinned) == expected
    assert worker_config(AGENT, pinned, DEFAULTS).task_queue == expected
    warning = planner.queue_edit_ignored(AGENT, spec, previous)
    if not warned:
        assert warning == ""
    else:
        assert f"asks for {warned!r}" in warning
        assert f"are on {expected!r}, which it keeps" in warning


def test_ids_and_queues_of_two_agents_never_collide() -> None:
    # Namespace a-b agent c and namespace a agent b-c: one queue before, two now.
    assert ids.default_task_queue("a-b", "c") == "steadfast.a-b.c"
    assert ids.default_task_queue("a", "b-c") == "steadfast.a.b-c"
    assert ids.workflow_id("a-b", "c", "t") != ids.workflow_id("a", "b-c", "t")
    # A sibling's id is never in an agent's query, even where the prefixes nest.
    news = ids.visibility_queries([ids.workflow_id("ns", "news", "t")])
    assert ids.workflow_id("ns", "news-eu", "t") not in " ".join(news)
    assert "STARTS_WITH" not in " ".join(news)
    # The ids of existing runs are kept (written out, not computed here).
    assert ids.workflow_id("research", "watch", "alpha") == ID["alpha"]


@pytest.mark.parametrize(
    ("queue", "owner"),
    [
        ("steadfast.a-b.c", ("a-b", "c")),
        ("steadfast.research.watch", ("research", "watch")),
        ("steadfast-research-watch", None),  # the legacy form reads several ways
        ("steadfast.research", None),
        ("steadfast.research.watch.eu", None),
        ("steadfast..watch", None),
        ("research", None),
    ],
)
def test_a_default_queue_is_read_back_to_its_one_agent(
    queue: str, owner: tuple[str, str] | None
) -> None:
    assert ids.default_queue_owner(queue) == owner
    if owner is not None:
        assert ids.default_task_queue(*owner) == queue


def test_an_agent_owns_its_topics_runs_and_their_scheduled_runs_only() -> None:
    """An agent named after another's topic id (``news-ai-<hash>``) has ids that start
    with it; deleting ``news`` cancelled that agent's runs as if they were its own."""
    news_ai = ids.workflow_id("ns", "news", "ai")
    known = {news_ai: "ai"}
    assert workflows.owner_topic(news_ai, known) == "ai"
    assert workflows.owner_topic(f"{news_ai}-2026-12-01T06:00:00Z", known) == "ai"
    neighbour = news_ai.removeprefix("research-ns-")  # a valid agent name
    assert ids.agent_name_ok(neighbour)
    theirs = ids.workflow_id("ns", neighbour, "quantum computing")
    assert theirs.startswith(news_ai + "-")
    assert workflows.owner_topic(theirs, known) is None
    assert workflows.owner_topic(f"{news_ai}-2026-12-01", known) is None
    assert workflows.owner_topic(f"{news_ai}-schedule", known) is None


def test_queries_name_every_topic_in_bounded_chunks() -> None:
    wf_ids = [f"research-ns-news-t{i}-0123456789" for i in range(120)]
    queries = ids.visibility_queries(wf_ids)
    assert len(queries) == 3
    for wf_id in wf_ids:
        (holder,) = [q for q in queries if f"'{wf_id}'" in q]
        assert f"'{wf_id}-schedule'" in holder


def test_no_durable_store_starts_no_worker() -> None:
    problem = Problem("NoDurableStore", "spec.storage.postgresSecretRef: required")
    # A change: no children, nothing started; the status names the fix.
    plan = planner.plan(observed(changed=True, problem=problem, replicas=None))
    assert condition(plan, "Ready") == ("False", "NoDurableStore")
    assert (plan.children, plan.start, plan.retry) == ((), (), None)
    # Workers left from before (an upgrade): scaled to zero, on a tick too.
    tick = planner.plan(replace(observed(problem=problem), replicas=(2, 2)))
    assert tick.scale is not None
    assert (tick.scale.current, tick.scale.desired) == (2, 0)
    assert tick.start == ()


def test_no_durable_store_takes_the_workers_from_keda() -> None:
    # An upgrade: workers and a ScaledObject rendered before the store was required.
    # KEDA would scale them up again on the next backlog, so the change deletes it;
    # a ScaledObject that is not the agent's is left alone.
    problem = Problem("NoDurableStore", "spec.storage.postgresSecretRef: required")
    children = live(raw_spec(workers={"autoscaler": "keda"}))
    plan = planner.plan(observed(changed=True, problem=problem, replicas=(3, 3), children=children))
    assert verbs(plan) == [("delete", "ScaledObject")]
    assert plan.children[0].name == render.deployment_name(AGENT)
    assert plan.scale is not None
    assert (plan.scale.current, plan.scale.desired) == (3, 0)
    theirs = {**children, "ScaledObject": {"metadata": {"ownerReferences": [{"uid": "other"}]}}}
    plan = planner.plan(observed(changed=True, problem=problem, replicas=(3, 3), children=theirs))
    assert plan.children == ()


def test_a_spec_without_a_durable_store_is_refused_naming_the_field() -> None:
    raw = raw_spec()
    del raw["storage"]
    with pytest.raises(InvalidSpec) as err:
        validate(AGENT, raw, DEFAULTS)
    assert err.value.reason == "NoDurableStore"
    assert "spec.storage.postgresSecretRef" in err.value.detail

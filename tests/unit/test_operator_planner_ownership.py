"""The operator never modifies an object it does not own (docs/design.md §3), as tables.

A child is this agent's when it carries the agent's *controller* owner reference
(uid match). A live object with the child's name that is not (created by hand,
by another tool, or left by an earlier agent of the same name) is left exactly
as it is: no replace, no delete, no scale, and the agent says ``Ready=False``
with reason ``ChildConflict`` naming the object and the fix.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.support.planning import AGENT, condition, live, observed, raw_spec, view

from steadfast_operator import planner
from steadfast_operator.status import Problem

pytestmark = pytest.mark.unit

NAMES = {
    "ConfigMap": "watch-worker-config",
    "Deployment": "watch-worker",
    "Service": "watch-worker",
    "PodDisruptionBudget": "watch-worker",
}


def stranger(obj: dict[str, Any] | None, owners: list[dict[str, Any]] | None) -> dict[str, Any]:
    """``obj`` as someone else made it: same name, other (or no) owner references."""
    assert obj is not None
    out = copy.deepcopy(obj)
    out["metadata"]["resourceVersion"] = "42"
    if owners is None:
        out["metadata"].pop("ownerReferences", None)
    else:
        out["metadata"]["ownerReferences"] = owners
    return out


OWNERS: dict[str, list[dict[str, Any]] | None] = {
    "no owner": None,
    "another agent of the same name": [
        {
            "kind": "ResearchAgent",
            "name": "watch",
            "uid": "uid-of-an-earlier-watch",
            "controller": True,
        }
    ],
    "this agent, but not as controller": [
        {"kind": "ResearchAgent", "name": "watch", "uid": AGENT.uid, "controller": False}
    ],
}


@pytest.mark.parametrize("kind", sorted(NAMES))
@pytest.mark.parametrize("owners", list(OWNERS), ids=list(OWNERS))
def test_an_unowned_child_is_left_alone_and_reported(kind: str, owners: str) -> None:
    raw = raw_spec(workers={"maxReplicas": 3})  # a PodDisruptionBudget is wanted too
    children = live(raw)
    children[kind] = stranger(children[kind], OWNERS[owners])
    obs = observed(raw, changed=True, children=children, replicas=(1, 1), temporal=view())
    plan = planner.plan(obs)
    assert plan.children == ()
    assert (plan.schedules, plan.stop, plan.start, plan.scale) == (None, (), (), None)
    assert condition(plan, "Ready") == ("False", "ChildConflict")
    assert plan.remember is not None
    message = plan.remember.message
    assert f"{kind} research/{NAMES[kind]}" in message
    assert "not owned by this ResearchAgent" in message
    assert "delete or rename it" in message
    assert plan.retry == planner.RETRY_AFTER["ChildConflict"]


def test_every_conflict_is_named() -> None:
    raw = raw_spec()
    children = live(raw)
    for kind in ("Deployment", "Service"):
        children[kind] = stranger(children[kind], None)
    plan = planner.plan(observed(raw, changed=True, children=children, temporal=view()))
    assert plan.remember is not None
    assert "Deployment research/watch-worker" in plan.remember.message
    assert "Service research/watch-worker" in plan.remember.message


def test_an_unowned_object_of_a_kind_no_longer_wanted_is_not_deleted() -> None:
    raw = raw_spec()  # builtin autoscaler: no ScaledObject wanted
    theirs = {"metadata": {"name": "watch-worker", "ownerReferences": [{"uid": AGENT.uid}]}}
    children = {**live(raw), "ScaledObject": theirs}
    plan = planner.plan(observed(raw, changed=True, children=children, temporal=view()))
    # A reference without controller=true is not this agent's controller reference.
    assert plan.children == ()
    assert condition(plan, "Ready") == ("True", "Reconciled")


def test_a_tick_after_a_conflict_neither_scales_nor_starts() -> None:
    conflict = Problem("ChildConflict", "Deployment research/watch-worker is not ours")
    plan = planner.plan(observed(problem=conflict, replicas=(1, 1), temporal=view(backlog=50)))
    assert (plan.children, plan.start, plan.scale, plan.pause) == ((), (), None, None)
    assert condition(plan, "Ready") == ("False", "ChildConflict")


def test_the_conflict_clears_once_the_stranger_is_gone() -> None:
    raw = raw_spec()
    plan = planner.plan(observed(raw, changed=True, children={}, temporal=view()))
    assert {c.verb for c in plan.children} == {"create"}
    assert sorted(c.kind for c in plan.children) == sorted(NAMES)
    assert condition(plan, "Ready") == ("True", "Reconciled")

"""The planner's decisions about child objects: which writes, and whose objects they are.

A rendered child (:mod:`.render`) is created when absent, replaced when a field
the operator owns differs (:mod:`.apply`), and an optional kind no longer wanted
is deleted. All of that only for objects the agent owns: a live object holding a
child's name without the agent's controller owner reference is someone else's,
and docs/design.md §3 promises that the operator never modifies an object it
does not own. Such an object is a :func:`conflict`, reported instead of written.
Pure: the reads are :mod:`.reconcile`'s, the decision to act the planner's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from steadfast_contract.spec import AgentSpec
from steadfast_operator import apply, render
from steadfast_operator.status import Problem

Obj = dict[str, Any]


@dataclass(frozen=True)
class ChildChange:
    """One write to a child object."""

    verb: Literal["create", "replace", "delete"]
    kind: str
    name: str
    body: Obj | None = None
    """The object to POST or PUT (``None`` for a delete)."""
    why: str = ""
    """For a replace: the first owned field that differs."""

    @property
    def key(self) -> tuple[str, str]:
        return self.verb, self.kind

    def __str__(self) -> str:
        return f"{self.verb} {self.kind}/{self.name}" + (f" ({self.why})" if self.why else "")


def conflict(
    agent: render.AgentRef,
    desired: list[Obj],
    live: Mapping[str, Obj | None],
) -> Problem | None:
    """``ChildConflict`` naming every live object that holds a child's name and is not ours.

    Such an object is neither replaced, deleted nor scaled; with no owner reference
    to the agent, the garbage collector leaves it when the agent goes.
    """
    taken = [
        f"{obj['kind']} {agent.namespace}/{obj['metadata']['name']}"
        for obj in desired
        if (found := live.get(obj["kind"])) is not None and not apply.owned_by(found, agent.uid)
    ]
    if not taken:
        return None
    one = len(taken) == 1
    return Problem(
        "ChildConflict",
        f"{', '.join(taken)} already exist{'s' if one else ''} and {'is' if one else 'are'} "
        "not owned by this ResearchAgent (no controller owner reference to it); the operator "
        "leaves it untouched: delete or rename it, or give the agent another name",
    )


def changes(
    agent: render.AgentRef,
    desired: list[Obj],
    live: Mapping[str, Obj | None],
    forbidden: frozenset[str],
) -> tuple[ChildChange, ...]:
    """Writes that make the live children what was rendered; none when they are."""
    out: list[ChildChange] = []
    for obj in desired:
        kind, name = obj["kind"], obj["metadata"]["name"]
        found = live.get(kind)
        if found is None:
            out.append(ChildChange("create", kind, name, obj))
        elif not apply.covers(found, apply.owned_view(obj)):
            why = apply.first_difference(found, apply.owned_view(obj)) or ""
            out.append(
                ChildChange("replace", kind, name, apply.merged_for_replace(obj, found), why)
            )
    wanted = {o["kind"] for o in desired}
    name = render.deployment_name(agent)
    for kind in apply.OPTIONAL_KINDS:
        found = live.get(kind)
        if kind in wanted or kind in forbidden or found is None:
            continue
        if apply.owned_by(found, agent.uid):
            out.append(ChildChange("delete", kind, name))
    return tuple(out)


def for_spec(
    agent: render.AgentRef,
    spec: AgentSpec,
    defaults: render.Defaults,
    live: Mapping[str, Obj | None],
    forbidden: frozenset[str],
) -> tuple[ChildChange, ...] | Problem:
    """The writes for ``spec``, or the conflict that forbids every one of them."""
    desired = render.children(agent, spec, defaults)
    return conflict(agent, desired, live) or changes(agent, desired, live, forbidden)


def release_keda(agent: render.AgentRef, live: Mapping[str, Obj | None]) -> tuple[ChildChange, ...]:
    """The agent's own ScaledObject deleted, when there is one: KEDA stops owning the
    worker Deployment's replicas, and the operator's own scale holds.

    For an agent whose workers must not run (``NoDurableStore``: workers rendered
    before a durable store was required would keep reports on their pods' disks),
    KEDA would otherwise scale them back up on the next backlog. A valid spec
    renders the ScaledObject again.
    """
    found = live.get("ScaledObject")
    if found is None or not apply.owned_by(found, agent.uid):
        return ()
    return (ChildChange("delete", "ScaledObject", found["metadata"]["name"]),)

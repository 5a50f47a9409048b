"""Which agent keeps a task queue that two agents name: the one created first.

A worker runs every activity it takes with its own agent's key, store and
recipients, so two agents whose workers poll one task queue would serve each
other's runs. The workers refuse another agent's tasks
(``steadfast_worker.ownership``), but a run whose activities keep landing on the
wrong worker fails; the operator says so at the agent instead, for the agents it
watches. Every ResearchAgent's queue is kept in a Kopf index (filled before any
handler runs, so an operator restart sees every agent before it judges one), keyed
by the Temporal it runs on (address and namespace) and the queue: the agent created
first keeps the queue, and a later one is refused (``TaskQueueShared``) until it
names a queue of its own or the first one is gone (the refusal is judged again every
15 s, :data:`.planner.RETRY_AFTER`). Pure functions; the index and the refusal are wired in
:mod:`.handlers` and :mod:`.reconcile`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from steadfast_contract.ids import default_task_queue
from steadfast_operator.topics import queue_in_status

QueueKey = tuple[str, str, str]
"""(Temporal address, Temporal namespace, task queue)."""


@dataclass(frozen=True, order=True)
class Claim:
    """An agent naming a queue; claims sort by age, then by namespace and name."""

    created: str
    """``metadata.creationTimestamp`` (RFC 3339 in UTC, so it sorts as time does)."""
    namespace: str
    name: str


def queue_key(address: str, temporal_namespace: str, task_queue: str) -> QueueKey:
    return (address, temporal_namespace or "default", task_queue)


def claimed_queue(
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    default_address: str,
) -> QueueKey:
    """The queue a ResearchAgent's workers poll, read from its raw spec and status as
    the reconciler reads it from the validated spec: the queue its status records (an
    agent stays on it), else the one its spec names, else its default."""
    temporal = spec.get("temporal")
    temporal = temporal if isinstance(temporal, Mapping) else {}
    queue = (
        queue_in_status(status)
        or str(temporal.get("taskQueue") or "")
        or default_task_queue(namespace, name)
    )
    address = str(temporal.get("address") or "") or default_address
    return queue_key(address, str(temporal.get("namespace") or ""), queue)


def refusal(me: Claim, claims: Iterable[Claim], task_queue: str) -> str | None:
    """Why agent ``me`` may not use ``task_queue``, which ``claims`` also name: another
    agent named it first. None when no other agent does, or ``me`` came first."""
    others = sorted(c for c in claims if (c.namespace, c.name) != (me.namespace, me.name))
    if not others or me < others[0]:
        return None
    first = others[0]
    return (
        f"spec.temporal.taskQueue: {task_queue} is already the task queue of the agent "
        f"{first.name} in namespace {first.namespace}, created first, on the same Temporal "
        "namespace: each agent's workers would take the other's runs (and refuse them, so "
        "those runs fail); name a task queue of this agent's own"
    )

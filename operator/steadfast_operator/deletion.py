"""What to do when an agent's deletion cannot reach Temporal: pure decisions, no I/O.

The finalizer (``steadfast.dev/finalizer``) is what keeps a deleted agent's
Schedules from firing on with no worker and its runs from going on uncancelled.
It is removed only once Temporal has confirmed that the agent's Schedules are
deleted and ``deletionPolicy`` was applied to its runs, however long Temporal is
away: the delete handler retries without limit, with a backoff that doubles up
to :data:`MAX_DELAY`, and the agent's ``Ready`` condition says what it waits for
(:data:`WAITING`).

``deletionPolicy: Abandon`` is the way out for an agent whose Temporal is gone
for good: the deletion tries Temporal once and lets the agent go either way.
Reachable, its Schedules are deleted and its runs left running; unreachable,
both are left, and the log names the Schedule id prefix to delete by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from steadfast_operator import status
from steadfast_operator.status import Problem

FIRST_DELAY = 5.0
"""Seconds before the first retry of a deletion that could not reach Temporal."""
MAX_DELAY = 60.0
"""The longest wait between two tries: a Temporal that comes back is seen within it."""
WAITING = "WaitingForTemporal"
"""``Ready`` condition reason while a deletion waits for Temporal."""
SAVING = "WaitingForReports"
"""``Ready`` condition reason while a deletion waits for cancelled runs to end (saving
their paid reports, finishing a mail): the agent's workers, which the agent's deletion
takes, must outlive them."""
SAVING_DELAY = 10.0
"""Seconds between two looks at runs saving their reports."""


def saving_message(workflow_ids: Sequence[str]) -> str:
    """What a deletion waiting for cancelled runs to save their reports says."""
    shown = ", ".join(workflow_ids[:3]) + (" and more" if len(workflow_ids) > 3 else "")
    return (
        f"deleting: waiting for {len(workflow_ids)} cancelled run(s) to end, saving what "
        f"they paid for or finishing a mail under way ({shown}); the agent and its workers "
        f"stay until they have. A run waits "
        f"for its report store up to storage.saveTimeout. To delete without waiting, set "
        f"spec.deletionPolicy: Abandon (the runs are then left without workers)"
    )


def retry_delay(retry: int) -> float:
    """Seconds before try ``retry + 1``: doubling from :data:`FIRST_DELAY`, capped."""
    return min(MAX_DELAY, FIRST_DELAY * float(2 ** min(max(retry, 0), 16)))


@dataclass(frozen=True)
class Blocked:
    """A deletion that could not reach Temporal: whether it waits, and what it says."""

    wait: bool
    """Keep the finalizer and retry after ``delay`` (``False``: let the agent go)."""
    delay: float
    message: str


def blocked(policy: str, address: str, namespace: str, problem: Problem, retry: int) -> Blocked:
    """The decision when a deletion's Temporal calls failed with ``problem``."""
    if policy == "Abandon":
        return Blocked(
            wait=False,
            delay=0.0,
            message=(
                f"deleted without Temporal at {address} (namespace {namespace}), as "
                f"deletionPolicy Abandon allows: its Schedules and runs are left there "
                f"({problem.message})"
            ),
        )
    return Blocked(
        wait=True,
        delay=retry_delay(retry),
        message=(
            f"deleting: waiting for Temporal at {address} (namespace {namespace}) to delete "
            f"this agent's Schedules and cancel its running workflows; the finalizer stays "
            f"until Temporal confirms. {problem.message}. To delete without waiting, set "
            f"spec.deletionPolicy: Abandon (Schedules and runs are then left in Temporal)"
        ),
    )


def waiting_status(
    previous: Mapping[str, Any],
    message: str,
    now: datetime,
    generation: int,
    reason: str = WAITING,
) -> dict[str, Any]:
    """The status patch of a deletion that waits: ``Ready=False``/:data:`WAITING`.

    The other conditions are kept as they were (a merge patch replaces the list).
    """
    old: Sequence[Mapping[str, Any]] = list(previous.get("conditions") or [])
    ready = status.condition(status.READY, False, reason, message, old, now, generation)
    conditions = [dict(c) for c in old if c.get("type") != status.READY]
    return {"conditions": [ready, *conditions]}

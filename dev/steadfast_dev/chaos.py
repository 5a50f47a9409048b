"""Killing a worker in the middle of a run, and proving what durability promises.

The promise is: a run whose worker dies resumes where it was, and no LLM call
that had finished is paid for twice. ``steadfast dev --chaos``, the crash tests
and the resume-time benchmark all check it the same way, against the
simulator's request log:

* every LLM request the simulator had *served* (a complete 200) before the
  SIGKILL is, at the end of the run, still served exactly once;
* the resume time is the time from the SIGKILL to the interrupted step being
  done (the next step scheduled, or the run closed, by the server's clock),
  which includes Temporal noticing the dead worker through the heartbeat timeout;
* what resuming saved is the run's own account when it closed (its
  ``interruptions`` and ``avoided_usd``): the spend of the calls finished before
  the kill, which a restart from scratch would have paid again.

The verdicts are pure functions of log entries (dicts as ``GET /_sim/log``
returns them); :func:`crash_during` is the I/O that produces them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from steadfast_contract import models, starter
from steadfast_contract.activities import STEP_OF_ACTIVITY as STEP_OF_ACTIVITY  # re-exported
from steadfast_contract.models import STEP_OF_PHASE as STEP_OF_PHASE  # re-exported
from steadfast_dev.processes import Child
from steadfast_dev.sim.client import SimAdmin

Entry = Mapping[str, Any]

#: Phases whose activity is an LLM call (so the kill can wait for the call in flight).
LLM_PHASES = frozenset(
    {
        models.Phase.GENERATING_QUERIES.value,
        models.Phase.WRITING.value,
        models.Phase.RESEARCHING.value,
    }
)


def served_keys_before(entries: Iterable[Entry], at: float) -> set[str]:
    """Keys of the LLM requests that had been served completely by time ``at``."""
    return {
        e["key"]
        for e in entries
        if e["service"] == "llm"
        and e["outcome"] == "served"
        and e.get("ended_at") is not None
        and e["ended_at"] <= at
    }


def in_flight_keys(entries: Iterable[Entry], at: float) -> set[str]:
    """Keys of LLM requests that had started but not finished by time ``at``."""
    return {
        e["key"]
        for e in entries
        if e["service"] == "llm"
        and e["started_at"] <= at
        and (e.get("ended_at") is None or e["ended_at"] > at)
    }


def repeated_calls(before: Iterable[str], served: Mapping[str, int]) -> dict[str, int]:
    """Keys served before the kill whose final served count is not exactly one."""
    return {k: served.get(k, 0) for k in before if served.get(k, 0) != 1}


def first_attempt_after(entries: Iterable[Entry], keys: set[str], at: float) -> float | None:
    """Seconds from ``at`` to the first new attempt of any of ``keys`` (the resumed call)."""
    starts = [e["started_at"] for e in entries if e["key"] in keys and e["started_at"] > at]
    return min(starts) - at if starts else None


_CLOSED_EVENTS = frozenset(
    {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    }
)

#: (server time, "scheduled" or "closed", activity type or "") from a history.
Mark = tuple[float, str, str]


def timeline(events: Iterable[HistoryEvent]) -> list[Mark]:
    """The events that tell when a step began: activity schedules and the close."""
    marks: list[Mark] = []
    for e in events:
        at = e.event_time.ToDatetime(tzinfo=UTC).timestamp()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = e.activity_task_scheduled_event_attributes.activity_type.name
            marks.append((at, "scheduled", name))
        elif e.event_type in _CLOSED_EVENTS:
            marks.append((at, "closed", ""))
    return marks


def resume_seconds(marks: Iterable[Mark], killed_at: float, step: int) -> float | None:
    """Kill -> the interrupted step done: the next step scheduled, or the run closed.

    Server timestamps, so the figure does not depend on how often anyone polled.
    """
    after = [
        at
        for at, kind, name in marks
        if at > killed_at and (kind == "closed" or STEP_OF_ACTIVITY.get(name, 0) > step)
    ]
    return min(after) - killed_at if after else None


@dataclass
class CrashReport:
    """What one SIGKILL showed."""

    workflow_id: str
    phase: str
    step: int
    served_before: int = 0
    """LLM requests completed before the kill."""
    repeated: dict[str, int] = field(default_factory=dict)
    """Of those, the ones not served exactly once by the end (empty when durability held)."""
    interrupted: int = 0
    """LLM requests in flight at the kill."""
    retry_after_s: float | None = None
    """Kill → the first new attempt of an interrupted LLM request."""
    resume_s: float | None = None
    """Kill → the interrupted step done (next step scheduled or run closed, server time)."""
    final_phase: str = ""
    final: starter.RunRow | None = None
    """The run as it closed: what resuming saved it (``interruptions``, ``avoided_usd``)."""

    @property
    def held(self) -> bool:
        return not self.repeated and self.final_phase == models.Phase.COMPLETED.value


def closing_rows(rows: Iterable[starter.RunRow], report: CrashReport) -> list[starter.RunRow]:
    """Every run of the session as it ended, the killed one as the crash check read it
    after it closed; the runs that lost a worker or an attempt carry interruptions."""
    final = report.final
    return [final if final is not None and r.workflow_id == final.workflow_id else r for r in rows]


async def _status(client: Client, workflow_id: str) -> models.RunStatus | None:
    try:
        return await starter.query_status(client, workflow_id, rpc_timeout=2.0)
    except Exception:  # no worker to answer right now; the caller polls again
        return None


async def wait_for_phase(
    client: Client, workflow_id: str, phase: str, deadline_s: float = 120.0, *, turn: int = 0
) -> models.RunStatus:
    """Poll the status query until the run is in ``phase`` (and, for a deep run, at
    ``turn`` or later)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        status = await _status(client, workflow_id)
        if status is not None:
            if str(status.phase) == phase and status.turn >= turn:
                return status
            if status.phase.terminal:
                raise RuntimeError(f"{workflow_id} ended in {status.phase} before {phase}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{workflow_id} did not reach phase {phase} in {deadline_s}s")


async def _wait_llm_in_flight(admin: SimAdmin, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        entries = (await admin.log("llm"))["entries"]
        if in_flight_keys(entries, time.time()):
            return
        await asyncio.sleep(0.05)


async def crash_during(
    client: Client,
    admin: SimAdmin,
    workflow_id: str,
    phase: str,
    worker: Child,
    start_worker: Callable[[], Child],
    *,
    settle_s: float = 0.3,
    deadline_s: float = 180.0,
    turn: int = 0,
) -> CrashReport:
    """SIGKILL ``worker`` while ``workflow_id`` runs ``phase`` (a deep run: at ``turn``);
    start another; check the log."""
    status = await wait_for_phase(client, workflow_id, phase, deadline_s, turn=turn)
    if phase in LLM_PHASES:
        await _wait_llm_in_flight(admin)
    await asyncio.sleep(settle_s)
    killed_at = time.time()
    worker.kill()
    entries = (await admin.log("llm"))["entries"]
    before = served_keys_before(entries, killed_at)
    interrupted = in_flight_keys(entries, killed_at)
    start_worker()
    step = STEP_OF_PHASE.get(models.Phase(phase), status.step)
    report = CrashReport(workflow_id, phase, step, len(before), interrupted=len(interrupted))
    await starter.wait_closed(client, workflow_id)
    final = await starter.describe_run(client, workflow_id)
    report.final_phase, report.final = final.phase, final
    log = await admin.log("llm")
    report.repeated = repeated_calls(before, log["served"]["llm"])
    report.retry_after_s = first_attempt_after(log["entries"], interrupted, killed_at)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    # A deep run's step spans every turn: its interrupted call is done when the
    # workflow schedules what comes after it (that turn's tools, or the next turn).
    done_step = 0 if phase == models.Phase.RESEARCHING.value else step
    report.resume_s = resume_seconds(timeline(history.events), killed_at, done_step)
    return report

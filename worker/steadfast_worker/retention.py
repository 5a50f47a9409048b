"""The retention sweep: transcripts of deep runs that ended without a report.

A deep run's transcript (every reply and every tool result, fetched pages
included) lives in the report store while its loop runs, and is deleted in the
transaction that saves its report. A run that ends any other way (failed, out of
budget, cancelled, terminated, timed out) leaves it there, where it helps to find
out why, but for ever. The worker therefore sweeps: a transcript nothing was
written to for a while is deleted once Temporal shows its run closed for
``storage.transcriptRetention`` (:func:`cadence` says how often it looks, and what
"a while" is).

Only what Temporal answers for decides, in the worker's own namespace, and only
for the worker's own agent (the runs on its task queue), since agents and
namespaces may share one database:

- a run still open (a deep run waiting for budget, or for a worker) keeps its
  transcript, however idle;
- a chain Temporal does not know here keeps it too: it is another namespace's
  (ids name the agent and the topic, not the namespace: two namespaces' runs of
  one agent's topic share an id), or one whose history retention removed whole
  (the sweep runs often enough to see it closed before that);
- a chain on another task queue is another agent's: its own workers sweep it, at
  its own ``transcriptRetention``.

A transcript is keyed by its chain's first run, and a chain that continued as new
loses that run to history retention first (it closed when it continued, maybe
long before the chain did). The newest run under the id names its chain's first
run, so a chain that is still the newest is judged by it whatever became of the
first. A chain followed by a re-run of its topic is looked up by its first run,
and when that is gone, by the run that ended it (:func:`chain_ends`): the first
of the id's closed runs, oldest first, whose describe names the transcript's
first run. None of them naming it is the same as not knowing the chain.

:func:`verdict` is the decision, a pure function; :func:`sweep` is the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import Client
from temporalio.client import WorkflowExecutionStatus as Status
from temporalio.service import RPCError, RPCStatusCode

from steadfast_worker.activities.storage import ReportStore

log = logging.getLogger(__name__)

#: How often a worker sweeps, at most and at least.
SWEEP_EVERY = timedelta(hours=1)
SWEEP_EVERY_MIN = timedelta(seconds=10)
#: A transcript written to this recently is not even looked at (unless kept for less).
IDLE = timedelta(hours=1)
#: How long a closed run's transcript is kept, to find out why it ended (the default).
KEEP = timedelta(days=1)
#: Conversations read from the store at a time (each costs a describe).
PAGE = 200
#: Closed runs described, at most, to find a chain whose first run is gone.
LOOKS = 3
#: What a workflow id may hold to be named in a visibility query (ids are ``[a-z0-9-]``).
QUERYABLE = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Found:
    """What Temporal says of a run under a conversation's workflow id."""

    first_run_id: str
    """The first run of its chain (continue-as-new keeps it; a re-run starts anew);
    empty from a server that does not say."""
    running: bool
    started: datetime
    closed: datetime | None
    task_queue: str = ""
    """The task queue its workflow tasks go to: which agent's workers run it."""
    run_id: str = ""
    """The run itself."""


def verdict(
    first_run_id: str,
    found: Found | None,
    now: datetime,
    keep: timedelta,
    *,
    chain: Found | None = None,
    task_queue: str = "",
) -> bool:
    """Whether the transcript of the chain that began with ``first_run_id`` may go.

    ``found`` is the newest run under its workflow id; ``chain`` is a run of the chain
    itself when that is another chain (its first run, or the run that ended it when
    history retention removed the first; None: Temporal does not know it here).
    With ``task_queue``, only a chain on that queue is judged.
    """
    if found is None:
        return False  # not this namespace's, or not any more: not ours to judge
    mine = found if found.first_run_id in ("", first_run_id) else chain
    if mine is None:
        return False  # the id is known here, but not this chain: another namespace's
    if task_queue and mine.task_queue != task_queue:
        return False  # another agent's: its workers judge it by its own retention
    if found.running:
        # Ours, or a later chain under the id (a re-run), which began after ours closed.
        later = found.first_run_id not in ("", first_run_id)
        return later and found.started <= now - keep
    # Closed: ours, or a later chain that began after ours closed.
    return found.closed is not None and found.closed <= now - keep


@dataclass(frozen=True)
class Listed:
    """One run under a workflow id, as visibility lists it (it does not say its chain)."""

    run_id: str
    status: Status | None
    started: datetime


def chain_ends(listed: Iterable[Listed], newest_run_id: str, looks: int = LOOKS) -> list[str]:
    """The runs to describe, in order, to find a chain whose first run is gone: runs that
    ended a chain (closed, not continued as new), oldest first, but the newest run
    (already described), at most ``looks``.

    Chains under one id in one namespace follow each other, and history retention
    removes runs in the order they closed: once a chain's first run is gone, so is every
    chain that closed before it began, and the oldest chain end left is its own (unless
    removal lags, for which ``looks`` leaves room). A chain whose end is not among them
    is kept, and found by a later sweep once the ends before it are removed.
    """
    ends = [
        run
        for run in listed
        if run.run_id != newest_run_id
        and run.status not in (None, Status.RUNNING, Status.CONTINUED_AS_NEW)
    ]
    return [run.run_id for run in sorted(ends, key=lambda run: run.started)][:looks]


def cadence(keep: timedelta) -> tuple[timedelta, timedelta]:
    """(how often to sweep, how long a transcript must have been idle to be looked at)
    for transcripts kept ``keep`` after their run closed.

    A sweep every ``keep`` deletes a transcript at most twice ``keep`` after its run
    closed, never before ``keep``; but not more often than every 10 s (each look costs
    a describe per idle transcript) nor less than hourly. A run writes to its
    transcript until it closes, so a transcript idle for ``keep`` can be looked at.
    """
    every = min(max(keep, SWEEP_EVERY_MIN), SWEEP_EVERY)
    return every, min(IDLE, keep)


def split_conversation(conversation: str) -> tuple[str, str]:
    """(workflow id, first run id) of a transcript's key (:func:`deep.conversation_key`);
    either is empty for a key of another form, which no run of ours wrote."""
    workflow_id, _, first_run_id = conversation.rpartition("/")
    return workflow_id, first_run_id


async def describe(client: Client, workflow_id: str, run_id: str = "") -> Found | None:
    """The run ``run_id`` (the newest: ``""``) under ``workflow_id``, or None when
    Temporal does not know it."""
    try:
        desc = await client.get_workflow_handle(workflow_id, run_id=run_id or None).describe()
    except RPCError as err:
        # A run id this server cannot read (not a UUID) names no run of its either.
        if err.status == RPCStatusCode.NOT_FOUND or (
            run_id and err.status == RPCStatusCode.INVALID_ARGUMENT
        ):
            return None
        raise
    info = desc.raw_description.workflow_execution_info
    return Found(
        first_run_id=info.first_run_id,
        running=info.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING,
        started=desc.start_time,
        closed=desc.close_time,
        task_queue=info.task_queue,
        run_id=info.execution.run_id,
    )


async def chain_end(
    client: Client, workflow_id: str, first_run_id: str, newest_run_id: str
) -> Found | None:
    """The run that ended the chain begun by ``first_run_id`` (gone) under ``workflow_id``,
    when Temporal still knows it here (:func:`chain_ends`); None otherwise."""
    if not QUERYABLE.fullmatch(workflow_id):
        return None  # not an id this project makes; not one to name in a query
    listed = [
        Listed(run.run_id, run.status, run.start_time)
        async for run in client.list_workflows(f"WorkflowId = '{workflow_id}'")
    ]
    for run_id in chain_ends(listed, newest_run_id):
        found = await describe(client, workflow_id, run_id)
        if found is not None and found.first_run_id == first_run_id:
            return found
    return None


async def chain_of(
    client: Client, workflow_id: str, first_run_id: str, newest: Found
) -> Found | None:
    """A run of the chain begun by ``first_run_id``, which is not ``newest``'s chain: its
    first run, or when history retention removed that, the run that ended it."""
    found = await describe(client, workflow_id, first_run_id)
    if found is None:
        found = await chain_end(client, workflow_id, first_run_id, newest.run_id)
    return found


async def sweep(
    client: Client,
    store: ReportStore,
    *,
    now: datetime | None = None,
    idle: timedelta = IDLE,
    keep: timedelta = KEEP,
    task_queue: str = "",
) -> int:
    """Delete the transcripts :func:`verdict` lets go (of runs on ``task_queue``, the
    worker's own, when given); how many."""
    now = now or datetime.now(UTC)
    before = (now - idle).isoformat(timespec="microseconds")
    gone, after = 0, ""
    while page := await store.idle_conversations(before, after, PAGE):
        for conversation in page:
            workflow_id, first_run_id = split_conversation(conversation)
            if not (workflow_id and first_run_id):
                # Not a key a run of ours wrote: kept. Asked about, Temporal refused the
                # describe (no workflow id), and every sweep of the store failed on it.
                continue
            found = await describe(client, workflow_id)
            chain = None
            if found is not None and found.first_run_id not in ("", first_run_id):
                chain = await chain_of(client, workflow_id, first_run_id, found)
            if verdict(first_run_id, found, now, keep, chain=chain, task_queue=task_queue):
                await store.forget_transcript(conversation)
                gone += 1
        after = page[-1]
    if gone:
        log.info("deleted %d transcript(s) of runs that ended without a report", gone)
    return gone


async def keep_sweeping(
    client: Client,
    store: Callable[[], Awaitable[ReportStore]],
    keep: timedelta = KEEP,
    task_queue: str = "",
) -> None:
    """:func:`sweep` for transcripts kept ``keep``, at the :func:`cadence` it sets, until
    cancelled; a failed sweep is logged and tried again at the next (the store or
    Temporal may be away for a while)."""
    every, idle = cadence(keep)
    while True:
        try:
            await sweep(client, await store(), idle=idle, keep=keep, task_queue=task_queue)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("transcript sweep failed: %s", type(err).__name__)
        await asyncio.sleep(every.total_seconds())

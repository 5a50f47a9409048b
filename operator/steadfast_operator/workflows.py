"""The operator's side of an agent's workflows: starts, observation and cancellation.

An agent's topics become workflows through the same idempotent start the
command line uses (:func:`steadfast_contract.starter.start_topic`): the id is derived
from namespace, agent and topic, a running workflow is reused, a completed one
is not re-run, so repeated events and operator restarts never duplicate a run.
(Schedules have their own module, :mod:`.schedules`.)

Observation is bounded per agent and tick: one visibility list of the agent's
workflows (exact ids and their Schedules' ids, :func:`steadfast_contract.ids.visibility_queries`,
so a sibling's runs never crowd the agent's own out of a page), a ``status`` query per
*running* run only when a worker is polling, and a result fetch once per closed
run (cached by run id, since a closed run never changes). A failed run's result
fetch yields the final status the workflow attached to its failure, so the
spend of failed and budget-stopped runs counts towards the day's budget. A run
with neither (terminated, timed out or cancelled from outside, or running with
no worker to answer the query) counts with the spend it keeps in its memo
(:class:`steadfast_contract.models.Spend`), which the visibility list returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from steadfast_contract import budget, ids, ledger, models, starter
from steadfast_contract.config import WorkerConfig
from steadfast_contract.starter import RunRow
from steadfast_operator.budgets import BudgetPush

log = logging.getLogger(__name__)

QUERY_CONCURRENCY = 8
"""Status queries and result fetches in flight at once, per agent."""


def topic_ids(cfg: WorkerConfig, topics: Iterable[str]) -> dict[str, str]:
    """Workflow id -> topic for the given topics."""
    return {ids.workflow_id(cfg.namespace, cfg.agent, t): t for t in topics}


def owner_topic(workflow_id: str, known: dict[str, str]) -> str | None:
    """The topic a listed workflow belongs to, or ``None`` if it is another agent's.

    Only exact ids and their scheduled runs (``<id>-<scheduled time>``) count: a
    listing by prefix also matches agents whose name extends this one's, and so
    does a topic's id (:func:`steadfast_contract.ids.scheduled_run`).
    """
    if workflow_id in known:
        return known[workflow_id]
    for wf_id, topic in known.items():
        if ids.scheduled_run(workflow_id, wf_id):
            return topic
    return None


async def start_topics(client: Client, cfg: WorkerConfig, topics: Iterable[str]) -> list[str]:
    """Start every topic not yet run; returns the workflow ids newly started."""
    started = []
    for topic in topics:
        result = await starter.start_topic(client, cfg, topic)
        if not result.existing:
            started.append(result.workflow_id)
    return started


async def stop_topics(
    client: Client, cfg: WorkerConfig, topics: Iterable[str], policy: str, *, unlisted: bool = False
) -> list[WorkflowExecution]:
    """Apply ``deletionPolicy`` to the running workflows of ``topics``; returns them.

    ``Cancel`` requests cancellation (the workflow records its phase as it
    ends); ``Abandon`` leaves them running and only reports them. With
    ``unlisted`` (the agent is being deleted) a running workflow of a topic no
    one listed counts too, when its input names this agent.
    """
    known = topic_ids(cfg, topics)
    running = " AND ExecutionStatus = 'Running'"
    queries = [q + running for q in ids.visibility_queries(list(known))]
    if unlisted:
        # Topics nobody lists any more: found by prefix, each proven ours by its input.
        prefix = ids.workflow_id_prefix(cfg.namespace, cfg.agent)
        queries = [f"WorkflowId STARTS_WITH '{prefix}'{running}"]
    stopped: list[WorkflowExecution] = []
    for query in queries:
        async for wf in client.list_workflows(query):
            if owner_topic(wf.id, known) is None and not (
                unlisted and await _ours(client, cfg, wf)
            ):
                continue
            stopped.append(wf)
            if policy == "Cancel":
                await _cancel(client, wf)
    return stopped


async def _cancel(client: Client, wf: WorkflowExecution) -> None:
    """Ask Temporal to cancel ``wf``. Only ``NOT_FOUND`` (it closed since it was listed)
    is taken as done: any other refusal (Temporal unavailable, a deadline, a rate limit)
    is raised, so a deletion keeps its finalizer and a removed topic is tried again,
    instead of leaving a run going that nobody will cancel."""
    try:
        await client.get_workflow_handle(wf.id, run_id=wf.run_id).cancel()
    except RPCError as err:
        if not cancel_moot(err):
            raise


def cancel_moot(err: RPCError) -> bool:
    """Whether a refused cancel needs no retry: the run is gone (closed since it was
    listed, or removed by retention), which is all a cancel wanted."""
    return err.status == RPCStatusCode.NOT_FOUND


def still_ending(phase: models.Phase | str) -> bool:
    """Whether a cancelled run whose status says ``phase`` has yet to end: a run
    cancelled mid-step saves what it paid to gather before it ends (and one cancelled
    while saving finishes the save), and only its own workers can run that save."""
    try:
        return not models.Phase(phase).terminal
    except ValueError:  # a phase of a newer release: it says it is not done
        return True


async def saving(client: Client, runs: Iterable[WorkflowExecution]) -> list[str]:
    """Of ``runs`` (those a deletion cancelled), the ids of those still to end, saving
    what they paid for: their status query answers a phase that is not terminal
    (:func:`still_ending`). A cancelled run saves what it gathered, finishes a save or
    a mail under way, then ends, and only its own workers can run those steps: a run
    still ``Emailing`` when asked is waited for, as one ``Saving`` is. A run no worker
    answers for is not waited for: no worker is left to save it anyway."""
    gate = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def still_saving(wf: WorkflowExecution) -> bool:
        handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
        async with gate:
            try:
                st: models.RunStatus = await handle.query(
                    models.STATUS_QUERY,
                    result_type=models.RunStatus,
                    rpc_timeout=timedelta(seconds=5),
                )
            except (RPCError, TimeoutError, WorkflowQueryFailedError):
                return False
        return still_ending(st.phase)

    runs = list(runs)
    found = await asyncio.gather(*map(still_saving, runs))
    return [wf.id for wf, yes in zip(runs, found, strict=True) if yes]


async def _ours(client: Client, cfg: WorkerConfig, wf: WorkflowExecution) -> bool:
    """Whether a run the agent's topics do not explain is the agent's, by its input.

    The id prefix alone also matches an agent whose name extends this one's.
    """
    handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
    async for event in handle.fetch_history_events():
        attrs = event.workflow_execution_started_event_attributes
        if not attrs.input.payloads:
            return False
        try:
            (given,) = await client.data_converter.decode(
                [attrs.input.payloads[0]], [models.ResearchInput]
            )
        except Exception:  # not a ResearchWorkflow this version can read: not ours
            return False
        return isinstance(given, models.ResearchInput) and (given.namespace, given.agent) == (
            cfg.namespace,
            cfg.agent,
        )
    return False


@dataclass
class RunCache:
    """Closed runs by run id: their outcome never changes, so it is fetched once."""

    closed: dict[str, RunRow] = field(default_factory=dict)
    limit: int = 500

    def put(self, info: RunRow) -> None:
        if len(self.closed) >= self.limit:
            self.closed.pop(next(iter(self.closed)))
        self.closed[info.run_id] = info


def _info(
    topic: str,
    wf_id: str,
    run_id: str,
    phase: str,
    started: datetime | None,
    closed: datetime | None,
    s: models.RunStatus | None,
    spend: models.Spend | None,
) -> RunRow:
    """The run as status lists it: figures from its own status, else from its memo."""
    figures = s if s is not None else spend or models.Spend()
    return RunRow(
        topic=topic,
        workflow_id=wf_id,
        run_id=run_id,
        phase=phase,
        started_at=started,
        closed_at=closed,
        cost_usd=figures.cost_usd,
        llm_calls=figures.llm_calls,
        retries=figures.retries,
        report_id=s.report_id if s else "",
        input_tokens=figures.input_tokens,
        output_tokens=figures.output_tokens,
        max_usd_per_run=s.max_usd_per_run if s else 0.0,
        max_usd_per_day=s.max_usd_per_day if s else 0.0,
        avoided_usd=s.avoided_usd if s else 0.0,
    )


async def _closed_status(client: Client, wf_id: str, run_id: str) -> models.RunStatus | None:
    handle = client.get_workflow_handle(wf_id, run_id=run_id, result_type=models.ResearchResult)
    try:
        result: models.ResearchResult = await handle.result(follow_runs=False)
    except WorkflowFailureError as err:
        # A failed run has no result; the workflow attaches its final status
        # (phase, cost, calls) to the failure. Older runs and runs ended from
        # outside carry none: their failure is their phase, their memo the spend.
        return starter.status_from_failure(err, client.data_converter.payload_converter)
    except Exception:
        return None
    return result.status


async def observe(
    client: Client,
    cfg: WorkerConfig,
    topics: Iterable[str],
    cache: RunCache,
    *,
    query_running: bool,
    limit: int = 2000,
) -> list[RunRow]:
    """The agent's runs (latest first per query), each with phase, cost and report id.

    The queries name the agent's exact ids, so ``limit`` (per query of
    :data:`~steadfast_contract.ids.QUERY_IDS` topics) bounds only the agent's own
    runs; whether a topic was done never depends on it (``status.startedTopics``).
    """
    known = topic_ids(cfg, topics)
    if not known:
        return []
    listed = []
    for query in ids.visibility_queries(list(known)):
        async for wf in client.list_workflows(query, limit=limit):
            topic = owner_topic(wf.id, known)
            if topic is not None:
                listed.append((topic, wf))
    # Queries and result fetches run side by side (bounded), so one slow run
    # cannot stretch the tick of the whole agent.
    gate = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def one(topic: str, wf: WorkflowExecution) -> RunRow:
        async with gate:
            if wf.status != WorkflowExecutionStatus.RUNNING and wf.status is not None:
                cached = cache.closed.get(wf.run_id)
                if cached is None:
                    s = await _closed_status(client, wf.id, wf.run_id)
                    phase = starter.closed_phase(wf.status)
                    if s is not None and models.Phase(s.phase).terminal:
                        phase = str(s.phase)
                    spend = None if s is not None else await starter.memo_spend(wf)
                    cached = _info(
                        topic, wf.id, wf.run_id, phase, wf.start_time, wf.close_time, s, spend
                    )
                    cache.put(cached)
                return cached
            s_running: models.RunStatus | None = None
            if query_running:
                # The query needs a worker; without one it would wait out its timeout.
                with contextlib.suppress(RPCError, WorkflowQueryFailedError, asyncio.TimeoutError):
                    s_running = await starter.query_status(client, wf.id, rpc_timeout=3.0)
            phase = str(s_running.phase) if s_running else "Running"
            spend = None if s_running is not None else await starter.memo_spend(wf)
            return _info(topic, wf.id, wf.run_id, phase, wf.start_time, None, s_running, spend)

    return list(await asyncio.gather(*(one(t, wf) for t, wf in listed)))


async def set_budgets(client: Client, pushes: Iterable[BudgetPush]) -> int:
    """Send each run its new limits (the ``budget`` update); returns how many took them.

    A run that refuses (it closed meanwhile, or spent past the new limit) keeps its
    own; the next pass sees its limits and decides again.
    """
    accepted = 0
    for push in pushes:
        if await _push(client, push):
            accepted += 1
    return accepted


#: Tries of one push whose run spent past its new limit while it was on its way.
PUSH_TRIES = 3


async def _push(client: Client, push: BudgetPush) -> bool:
    """Send one run its new limits. A run limit is never below what the run spent
    (its update refuses that): when the run spent past it since the plan read its
    spend, it gets the limit at its new spend, which stops its next call all the same."""
    handle = client.get_workflow_handle(push.workflow_id, run_id=push.run_id)
    per_run = push.max_usd_per_run
    for _ in range(PUSH_TRIES):
        try:
            await handle.execute_update(
                models.BUDGET_UPDATE,
                models.SetBudgetInput(per_run, push.max_usd_per_day),
                result_type=models.SetBudgetResult,
            )
            return True
        except (WorkflowUpdateFailedError, RPCError) as err:
            why = getattr(err, "cause", None) or err
            spent = await _spent(handle) if per_run is not None else None
            if spent is None or per_run is None or spent <= per_run:
                log.info("%s kept its budget: %s", push.workflow_id, why)
                return False
            per_run = spent
    return False


async def _spent(handle: WorkflowHandle[Any, Any]) -> float | None:
    """What the run says it spent, or None when it does not answer."""
    try:
        st: models.RunStatus = await handle.query(
            models.STATUS_QUERY, result_type=models.RunStatus, rpc_timeout=timedelta(seconds=3)
        )
    except (RPCError, TimeoutError, WorkflowQueryFailedError):
        return None
    return float(st.cost_usd)


async def day_spent(client: Client, cfg: WorkerConfig) -> float | None:
    """What the agent's budget ledger for today (UTC) says it spent; 0 when no call
    was made today, ``None`` when it cannot be read (no worker to answer the query)."""
    key = budget.ledger_key(cfg.namespace, cfg.agent, cfg.task_queue)
    handle = client.get_workflow_handle(budget.ledger_id(key, budget.day_of(datetime.now(UTC))))
    try:
        day: ledger.LedgerState = await handle.query(
            ledger.LEDGER_QUERY, result_type=ledger.LedgerState, rpc_timeout=timedelta(seconds=3)
        )
    except RPCError as err:
        return 0.0 if err.status == RPCStatusCode.NOT_FOUND else None
    except (TimeoutError, WorkflowQueryFailedError):
        return None
    return day.spent_usd

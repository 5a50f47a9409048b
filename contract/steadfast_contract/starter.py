"""Starting research runs and reading their state, for every starter.

``steadfast run``, ``steadfast dev`` and ``steadfast status`` (and the
benchmarks) start the same workflow the same way and describe runs in the
same rows. Starting is idempotent: the workflow id is derived from the agent
and topic (:mod:`steadfast_contract.ids`), a running workflow with that id is
reused rather than duplicated, and whether a *finished* one is re-run is an
explicit choice of the caller.

Decisions (settings from a configuration, which id-reuse policy, what a row
says for a workflow in a given state) are pure functions; the coroutines at
the bottom are the I/O.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.converter import PayloadConverter, value_to_type
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from steadfast_contract import ids, models, pricing
from steadfast_contract.config import ConfigError, WorkerConfig

log = logging.getLogger(__name__)


def settings_from_config(config: WorkerConfig) -> models.RunSettings:
    """The workflow's ``settings`` for ``config``; raises ConfigError for an unpriced model.

    The price is resolved here, at start, and recorded in the input: a later
    change of the built-in table must not change what a replay decides.
    """
    override = config.model.pricing.to_pricing() if config.model.pricing else None
    try:
        price = pricing.lookup(config.model.name, override)
    except pricing.UnknownModelError as err:
        raise ConfigError(f"model.pricing: {err.args[0]}") from None
    return models.RunSettings(
        model=config.model.name,
        max_tokens=config.model.max_tokens,
        context_tokens=config.model.context_tokens,
        pricing=price,
        max_usd_per_run=config.budget.max_usd_per_run,
        require_approval=config.notify.require_approval,
        approval_timeout_seconds=config.notify.approval_timeout.total_seconds(),
        retry_policies=config.retry_policies.resolve(),
        heartbeat_timeout_seconds=config.worker.heartbeat_timeout.total_seconds(),
        search_provider=config.search.provider,
        search_max_results=config.search.max_results,
        budget_pause_seconds=config.budget.pause_timeout.total_seconds(),
        max_usd_per_day=config.budget.max_usd_per_day,
        save_timeout_seconds=config.storage.save_timeout.total_seconds(),
        strategy=config.research.strategy,
        max_turns=config.research.max_turns,
        continue_as_new_after_turns=config.research.continue_as_new_after_turns,
        fetch=config.research.tools.fetch_page.rules(),
        mail_recipients=bool(config.notify.email.to),
        shape=models.CURRENT_SHAPE,
    )


def research_input(cfg: WorkerConfig, topic: str) -> models.ResearchInput:
    return models.ResearchInput(
        topic=topic,
        agent=cfg.agent,
        namespace=cfg.namespace,
        settings=settings_from_config(cfg),
    )


def reuse_policy(rerun: bool) -> WorkflowIDReusePolicy:
    """A finished topic is re-researched only when asked; a failed one always may be."""
    if rerun:
        return WorkflowIDReusePolicy.ALLOW_DUPLICATE
    return WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY


CONTINUED_AS_NEW = "ContinuedAsNew"
"""The phase a run that continued as new is listed with (its chain goes on)."""


CLOSED_PHASES: dict[WorkflowExecutionStatus, str] = {
    WorkflowExecutionStatus.COMPLETED: models.Phase.COMPLETED.value,
    WorkflowExecutionStatus.FAILED: models.Phase.FAILED.value,
    WorkflowExecutionStatus.CANCELED: models.Phase.CANCELLED.value,
    WorkflowExecutionStatus.TERMINATED: "Terminated",
    WorkflowExecutionStatus.TIMED_OUT: "TimedOut",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: CONTINUED_AS_NEW,
}
"""The phase a run shows for how Temporal closed it, when the run's own status does not
say (the command line's rows and the operator's status use this one table)."""


def closed_phase(execution: WorkflowExecutionStatus | None) -> str:
    """The phase of a run Temporal closed as ``execution``; ``Unknown`` for anything else."""
    return CLOSED_PHASES.get(execution, "Unknown") if execution is not None else "Unknown"


@dataclass(frozen=True)
class Started:
    """What a start did: ``existing`` when the id was already running or finished."""

    topic: str
    workflow_id: str
    run_id: str
    existing: bool


@dataclass(frozen=True)
class RunRow:
    """One run as every reader describes it: the tables of ``dev`` and ``status``, and
    the operator's status (which also needs its run id, times and tokens)."""

    topic: str
    workflow_id: str
    phase: str
    report_id: str = ""
    llm_calls: int = 0
    retries: int = 0
    cost_usd: float = 0.0
    step: int = 0
    total_steps: int = models.TOTAL_STEPS
    message: str = ""
    run_id: str = ""
    started_at: datetime | None = None
    closed_at: datetime | None = None
    """When Temporal closed the run; ``None`` while it is open."""
    input_tokens: int = 0
    output_tokens: int = 0
    max_usd_per_run: float = 0.0
    """The run's own limits, from its ``status`` (0: not known, e.g. no worker answered)."""
    max_usd_per_day: float = 0.0
    avoided_usd: float = 0.0
    """What resuming saved the run: spend a restart from scratch would have re-paid."""
    calls_not_repeated: int = 0
    interruptions: tuple[models.Interruption, ...] = ()
    """The newest interruptions (lost workers, retried attempts), oldest first."""
    max_turns: int = 0
    """A ``deep`` run's planned LLM turns (0 for a pipeline run)."""
    turn: int = 0
    """A ``deep`` run's turn in flight or last finished."""
    tool_calls: int = 0

    @property
    def running(self) -> bool:
        """Whether Temporal still has the run open (by its close time)."""
        return self.closed_at is None

    @property
    def terminal(self) -> bool:
        try:
            return models.Phase(self.phase).terminal
        except ValueError:
            return self.phase in CLOSED_PHASES.values()


def row_from_status(workflow_id: str, status: models.RunStatus, topic: str = "") -> RunRow:
    return RunRow(
        topic=status.topic or topic,
        workflow_id=workflow_id,
        phase=str(status.phase),
        report_id=status.report_id,
        llm_calls=status.llm_calls,
        retries=status.retries,
        cost_usd=status.cost_usd,
        step=status.step,
        total_steps=status.total_steps,
        message=status.message,
        avoided_usd=status.avoided_usd,
        calls_not_repeated=status.calls_not_repeated,
        interruptions=tuple(status.interruptions),
        max_turns=status.max_turns,
        turn=status.turn,
        tool_calls=status.tool_calls,
    )


def row_for_closed(
    workflow_id: str,
    topic: str,
    execution: WorkflowExecutionStatus | None,
    last: models.RunStatus | None,
    failure: str = "",
    spend: models.Spend | None = None,
) -> RunRow:
    """A finished workflow: its last known status, with the phase its closing implies.

    A run that failed in a way the workflow itself reported (budget exhausted,
    rejected) keeps its own phase; a run that was terminated or timed out from
    outside keeps the workflow's closing status, since the workflow never saw it.
    """
    closed = closed_phase(execution)
    if last is None:
        return _spend_row(topic, workflow_id, closed, failure, spend)
    row = row_from_status(workflow_id, last, topic)
    if not models.Phase(last.phase).terminal or execution in (
        WorkflowExecutionStatus.TERMINATED,
        WorkflowExecutionStatus.TIMED_OUT,
        WorkflowExecutionStatus.CANCELED,
    ):
        row = replace(row, phase=closed)
    if failure and not row.message:
        row = replace(row, message=failure)
    return row


def _spend_row(
    topic: str, workflow_id: str, phase: str, message: str, spend: models.Spend | None
) -> RunRow:
    """A row for a run whose own status is out of reach: figures from its memo, if any."""
    spent = spend or models.Spend()
    return RunRow(
        topic=topic,
        workflow_id=workflow_id,
        phase=phase,
        llm_calls=spent.llm_calls,
        retries=spent.retries,
        cost_usd=spent.cost_usd,
        message=message,
    )


def status_from_failure(err: BaseException, converter: PayloadConverter) -> models.RunStatus | None:
    """The final status a failed run attached to its failure, or ``None``.

    ``ResearchWorkflow`` ends a failed, misconfigured or budget-stopped run with
    an ``ApplicationError`` whose details are its last :class:`RunStatus`, so the
    cost of a run without a result is still known. Runs from before that (and
    failures from outside the workflow: terminations, timeouts) carry none.
    """
    cause = err.cause if isinstance(err, WorkflowFailureError) else err
    if not isinstance(cause, ApplicationError) or not cause.details:
        return None
    failure = cause.failure
    try:
        if failure is not None and failure.application_failure_info.details.payloads:
            payloads = failure.application_failure_info.details.payloads
            decoded = converter.from_payloads(payloads[:1], [models.RunStatus])[0]
        else:
            decoded = value_to_type(models.RunStatus, cause.details[0])
    except Exception:  # details of another shape: not a status
        return None
    return decoded if isinstance(decoded, models.RunStatus) else None


def counted_runs(rows: Iterable[RunRow]) -> list[RunRow]:
    """The rows whose figures add up: every row but a run that continued as new and whose
    next run is listed too. A deep run carries its status (spend, calls, tokens, what
    resuming saved) into the run it continues as, so the chain's last run says the
    whole chain's figures, and its earlier runs say a part of them again. A continued
    run whose next run is not listed (cut off by a listing's bound) counts itself."""
    rows = list(rows)
    starts: dict[str, list[datetime]] = {}
    for r in rows:
        if r.started_at is not None:
            starts.setdefault(r.workflow_id, []).append(r.started_at)

    def continued_in_listing(r: RunRow) -> bool:
        if r.phase != CONTINUED_AS_NEW or r.started_at is None:
            return False
        return any(t > r.started_at for t in starts.get(r.workflow_id, ()))

    return [r for r in rows if not continued_in_listing(r)]


def total_cost(rows: list[RunRow]) -> float:
    """What ``rows`` spent, each chain of runs counted once (:func:`counted_runs`)."""
    return sum(r.cost_usd for r in counted_runs(rows))


# --- I/O -----------------------------------------------------------------------------


async def start_topic(
    client: Client,
    cfg: WorkerConfig,
    topic: str,
    *,
    rerun: bool = False,
    workflow_id: str | None = None,
) -> Started:
    """Start one topic's workflow, or find the one already there.

    One RPC when the start is new: the id-conflict policy ``FAIL`` makes the server
    refuse a second run of a running id (and the reuse policy a finished one that
    is not to be re-run), so two concurrent starts make one run, and the refusal
    names the run that is there -- no describe before each start.
    """
    wf_id = workflow_id or ids.workflow_id(cfg.namespace, cfg.agent, topic)
    try:
        handle: WorkflowHandle[Any, Any] = await client.start_workflow(
            models.WORKFLOW_NAME,
            research_input(cfg, topic),
            id=wf_id,
            task_queue=cfg.task_queue,
            task_timeout=models.WORKFLOW_TASK_TIMEOUT,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=reuse_policy(rerun),
        )
    except WorkflowAlreadyStartedError as err:
        return Started(topic, wf_id, err.run_id or await _latest_run_id(client, wf_id), True)
    run_id = handle.result_run_id or handle.first_execution_run_id or ""
    return Started(topic, wf_id, run_id, existing=False)


async def _latest_run_id(client: Client, workflow_id: str) -> str:
    """The run a refused start found, for a server whose refusal does not name it."""
    try:
        return (await client.get_workflow_handle(workflow_id).describe()).run_id
    except RPCError:
        return ""


async def query_status(
    client: Client, workflow_id: str, rpc_timeout: float = 5.0
) -> models.RunStatus:
    """The workflow's own account of itself (needs a worker polling its task queue)."""
    handle = client.get_workflow_handle(workflow_id)
    status: models.RunStatus = await handle.query(
        models.STATUS_QUERY,
        result_type=models.RunStatus,
        rpc_timeout=timedelta(seconds=rpc_timeout),
    )
    return status


async def describe_run(client: Client, workflow_id: str, topic: str = "") -> RunRow:
    """A row for one workflow in whatever state it is, with or without a worker."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
    except RPCError as err:
        return RunRow(topic=topic, workflow_id=workflow_id, phase="NotFound", message=str(err))
    row = await _describe(client, desc, workflow_id, topic)
    return replace(row, run_id=desc.run_id, started_at=desc.start_time, closed_at=desc.close_time)


async def _describe(
    client: Client, desc: WorkflowExecutionDescription, workflow_id: str, topic: str
) -> RunRow:
    handle = client.get_workflow_handle(workflow_id)
    if desc.status == WorkflowExecutionStatus.RUNNING:
        try:
            return row_from_status(workflow_id, await query_status(client, workflow_id), topic)
        except (RPCError, WorkflowQueryFailedError) as err:
            message = f"no worker answered the status query: {err}"
            return _spend_row(topic, workflow_id, "Running", message, await memo_spend(desc))
    if desc.status == WorkflowExecutionStatus.COMPLETED:
        typed = client.get_workflow_handle(workflow_id, result_type=models.ResearchResult)
        result: models.ResearchResult = await typed.result()
        return row_for_closed(workflow_id, topic, desc.status, result.status)
    failure = ""
    last: models.RunStatus | None = None
    try:
        await handle.result()
    except Exception as err:  # the failure text is what the row reports
        cause = err.__cause__ or err
        failure = str(cause)
        last = status_from_failure(err, client.data_converter.payload_converter)
    if last is None:
        # Without a worker to replay the closed run, the closing status is all there is.
        with contextlib.suppress(RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
            last = await query_status(client, workflow_id, rpc_timeout=3.0)
    spend = await memo_spend(desc) if last is None else None
    return row_for_closed(workflow_id, topic, desc.status, last, failure, spend)


async def memo_spend(wf: WorkflowExecution) -> models.Spend | None:
    """The spend a run keeps in its memo; ``None`` for runs from before it did."""
    try:
        spend = await wf.memo_value(models.SPEND_MEMO, None, type_hint=models.Spend)
    except Exception:  # a memo this version cannot decode counts as none
        log.warning("workflow %s: unreadable %s memo", wf.id, models.SPEND_MEMO)
        return None
    return spend if isinstance(spend, models.Spend) else None


async def wait_closed(client: Client, workflow_id: str) -> None:
    """Return once the workflow's latest run has closed, however it closed."""
    # The outcome is read by describe_run; here only the waiting matters.
    with contextlib.suppress(Exception):
        await client.get_workflow_handle(workflow_id).result()

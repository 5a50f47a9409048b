"""Before a deleted agent goes: its Schedules deleted, ``deletionPolicy`` applied to its runs.

The delete handler (:mod:`.handlers`) calls :func:`finalize` until it returns;
Kopf removes the finalizer only then. The agent's Schedules and running
workflows are found in Temporal (:func:`steadfast_operator.schedules.find`,
:func:`steadfast_operator.workflows.stop_topics`), the planner decides what
goes (:func:`steadfast_operator.planner.plan_deletion`), and while Temporal
cannot be reached or refuses, :mod:`.deletion` decides whether to wait (the
agent's ``Ready`` condition says for what) or, with ``deletionPolicy:
Abandon``, to let the agent go. Under ``Cancel`` it also waits while a run it
cancelled has yet to end (:class:`Saving`: saving the report it paid for, or what it
gathered, or finishing a mail under way): a cancel does
not stop that save, and the agent's workers, which go with the agent, must
outlive it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import kopf
from temporalio.service import RPCError

from steadfast_contract import ids
from steadfast_contract.config import WorkerConfig
from steadfast_contract.spec import AgentSpec
from steadfast_operator import deletion, metrics, planner, schedules, topics, workflows
from steadfast_operator.planner import Observed, TemporalView
from steadfast_operator.reconcile import AgentState, agent_of, connect, status_topics
from steadfast_operator.render import AgentRef
from steadfast_operator.shared import Shared
from steadfast_operator.spec import InvalidSpec, parse_spec, worker_config
from steadfast_operator.status import Problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Saving:
    """Runs the deletion cancelled that are still saving the report they paid for."""

    workflow_ids: list[str]


async def finalize(
    shared: Shared, state: AgentState, body: kopf.Body, patch: kopf.Patch, retry: int = 0
) -> None:
    """Return once Temporal confirmed; raise :class:`kopf.TemporaryError` to be retried."""
    agent = agent_of(body)
    try:
        spec = parse_spec(agent.namespace, agent.name, dict(body.spec))
        spec = topics.pin_task_queue(agent, spec, body.status)
        cfg = worker_config(agent, spec, shared.config.defaults)
    except InvalidSpec:
        # The spec in force is the last one that validated; without one nothing was started.
        if state.spec is None or state.config is None:
            metrics.forget_agent(agent.namespace, agent.name, "")
            return
        spec, cfg = state.spec, state.config
    generation = int(body.meta.get("generation") or 0)
    async with shared.lock(agent.namespace, agent.name):
        problem = await clean_up(shared, agent, spec, cfg, body, generation)
    if isinstance(problem, Saving):
        # Cancelled runs still saving the report they paid for: keep the workers.
        message = deletion.saving_message(problem.workflow_ids)
        patch.status.update(
            deletion.waiting_status(
                dict(body.status), message, datetime.now(UTC), generation, deletion.SAVING
            )
        )
        raise kopf.TemporaryError(message, delay=deletion.SAVING_DELAY)
    if problem is not None:
        address = spec.temporal.address or shared.config.defaults.temporal_address
        decision = deletion.blocked(
            spec.deletion_policy, address, spec.temporal.namespace, problem, retry
        )
        if decision.wait:
            now = datetime.now(UTC)
            patch.status.update(
                deletion.waiting_status(dict(body.status), decision.message, now, generation)
            )
            raise kopf.TemporaryError(decision.message, delay=decision.delay)
        log.warning(
            "%s/%s %s; delete its Schedules by hand (ids starting %s, ending %s)",
            agent.namespace,
            agent.name,
            decision.message,
            ids.workflow_id_prefix(agent.namespace, agent.name),
            schedules.SUFFIX,
        )
    metrics.forget_agent(agent.namespace, agent.name, cfg.task_queue)
    shared.locks.pop((agent.namespace, agent.name), None)


async def clean_up(
    shared: Shared,
    agent: AgentRef,
    spec: AgentSpec,
    cfg: WorkerConfig,
    body: kopf.Body,
    generation: int,
) -> Problem | Saving | None:
    """Delete the agent's Schedules and apply the policy to its runs; the problem if
    any, or under ``Cancel`` the cancelled runs still saving their reports."""
    client = await connect(shared, agent, spec)
    if isinstance(client, Problem):
        return client
    previous = dict(body.status)
    listed = status_topics(previous)
    try:
        found = await schedules.find(client, cfg, {*spec.unique_topics(), *listed})
        plan = planner.plan(
            Observed(
                agent=agent,
                now=datetime.now(UTC),
                generation=generation,
                spec=spec,
                config=cfg,
                deleting=True,
                previous_status=previous,
                temporal=TemporalView(schedules=found),
            )
        )
        if plan.schedules is not None:
            await schedules.delete(client, cfg, plan.schedules.delete)
        stopped = await workflows.stop_topics(
            client, cfg, plan.stop, plan.deletion_policy, unlisted=plan.stop_unlisted
        )
        saving = []
        if stopped and plan.deletion_policy == "Cancel":
            saving = await workflows.saving(client, stopped)
    except (RPCError, RuntimeError, OSError, TimeoutError) as err:
        return Problem("TemporalError", f"Temporal call failed: {err}")
    if saving:
        return Saving(saving)
    log.info(
        "%s/%s deleted: %d Schedules, %s %d running workflows",
        agent.namespace,
        agent.name,
        len(plan.schedules.delete) if plan.schedules is not None else 0,
        "cancelled" if plan.deletion_policy == "Cancel" else "abandoned",
        len(stopped),
    )
    return None

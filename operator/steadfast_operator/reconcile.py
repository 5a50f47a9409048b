"""One pass over one agent: observe, plan, execute, one status write.

The handlers (:mod:`.handlers`) call :func:`reconcile` on a change or resume,
:func:`refresh` on every timer tick, and :func:`steadfast_operator.finalizing.finalize`
before the agent goes.
Each reads the cluster and Temporal (:func:`observe`), asks the pure planner
what to do (:func:`steadfast_operator.planner.plan`), performs exactly that
(:func:`execute`) and writes the status once.

User input never raises out of here except as a Kopf error that says whether
retrying can help: :class:`kopf.TemporaryError` with a delay for things that
may appear (a Secret, a reachable Temporal), nothing at all for things only a
spec edit can fix (the ``Ready`` condition says which).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from temporalio.client import Client
from temporalio.service import RPCError

from steadfast_contract.config import WorkerConfig
from steadfast_contract.spec import AgentSpec
from steadfast_operator import (
    apply,
    autoscale,
    metrics,
    planner,
    queueclaims,
    render,
    schedules,
    workflows,
)
from steadfast_operator.children import ChildChange
from steadfast_operator.kube import path
from steadfast_operator.planner import Failure, Observed, Plan, TemporalView
from steadfast_operator.shared import Shared
from steadfast_operator.spec import InvalidSpec, validate, worker_config
from steadfast_operator.status import Problem

Claims = kopf.Index[queueclaims.QueueKey, queueclaims.Claim]
"""Every watched agent's task queue (the ``agent_queues`` index of :mod:`.handlers`)."""

log = logging.getLogger(__name__)

#: Live children the operator reads on a change, named as :mod:`.render` names them.
CHILD_KINDS = ("ConfigMap", "Deployment", "Service", *apply.OPTIONAL_KINDS)


@dataclass
class AgentState:
    """Per-agent memory between passes (lost on restart, rebuilt safely)."""

    problem: Problem | None = None
    """The last change's problem; ticks report it until the next change."""
    history: autoscale.History = field(default_factory=autoscale.History)
    cache: workflows.RunCache = field(default_factory=workflows.RunCache)
    config: WorkerConfig | None = None
    spec: AgentSpec | None = None
    generation: int = 0
    schedules_paused: bool = False
    """Whether the agent's Schedules were last left paused (daily budget spent)."""
    last_write: float = 0.0
    """Monotonic time of the last status write (volatile fields are throttled)."""


def replica_counts(deployment: dict[str, Any]) -> tuple[int, int]:
    """(spec replicas, ready replicas) of a Deployment object."""
    spec = deployment.get("spec") or {}
    live_status = deployment.get("status") or {}
    return int(spec.get("replicas") or 0), int(live_status.get("readyReplicas") or 0)


def agent_of(body: kopf.Body) -> render.AgentRef:
    return render.AgentRef(
        name=body.meta["name"], namespace=body.meta["namespace"], uid=body.meta["uid"]
    )


async def reconcile(
    shared: Shared,
    state: AgentState,
    body: kopf.Body,
    patch: kopf.Patch,
    claims: Claims | None = None,
) -> None:
    """Create/update/resume: validate, check Secrets, apply children, Schedules and runs.
    ``claims``: every watched agent's task queue (:mod:`.queueclaims`)."""
    await _pass(shared, state, body, patch, changed=True, claims=claims)


async def refresh(shared: Shared, state: AgentState, body: kopf.Body, patch: kopf.Patch) -> None:
    """Status, autoscaling and starts due: the timer's work."""
    await _pass(shared, state, body, patch, changed=False)


async def _pass(
    shared: Shared,
    state: AgentState,
    body: kopf.Body,
    patch: kopf.Patch,
    *,
    changed: bool,
    claims: Claims | None = None,
) -> None:
    agent = agent_of(body)
    started = time.perf_counter()
    outcome = "error"
    try:
        async with shared.lock(agent.namespace, agent.name):
            obs, client = await observe(shared, state, agent, body, changed=changed, claims=claims)
            plan = planner.plan(obs)
            while (failure := await execute(shared, state, obs, client, plan)) is not None:
                obs = obs.after(failure)
                plan = planner.plan(obs)
            _remember(state, obs, plan, changed)
            if plan.status is not None:
                if plan.write_status:
                    patch.status.update(plan.status)
                    state.last_write = time.monotonic()
                queue = obs.temporal.queue if obs.temporal is not None else None
                metrics.export_agent(agent.namespace, agent.name, plan.status, queue, state.spec)
        outcome = _outcome(plan.remember)
    finally:
        if changed:
            metrics.RECONCILES.labels("reconcile", outcome).inc()
        kind = "reconcile" if changed else "refresh"
        metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
    if plan.retry is not None and plan.remember is not None:
        raise kopf.TemporaryError(plan.remember.message, delay=plan.retry)


def _outcome(problem: Problem | None) -> str:
    if problem is None:
        return "ok"
    if problem.reason in ("InvalidSpec", "BudgetBelowOneCall", "NoDurableStore"):
        return "invalid"
    return "error" if problem.reason == "ReconcileError" else "unready"


def _remember(state: AgentState, obs: Observed, plan: Plan, changed: bool) -> None:
    """Keep what the next pass needs: the spec in force, its problem, the autoscaler's memory."""
    state.spec, state.config, state.generation = obs.spec, obs.config, obs.generation
    if changed:
        state.problem = plan.remember
    if plan.history is not None:
        state.history = plan.history


# --- observe -------------------------------------------------------------------------


async def observe(
    shared: Shared,
    state: AgentState,
    agent: render.AgentRef,
    body: kopf.Body,
    *,
    changed: bool,
    claims: Claims | None = None,
) -> tuple[Observed, Client | None]:
    """What the planner needs, read from the spec, the cluster and Temporal."""
    raw = dict(body.spec)
    spec, config, problem = state.spec, state.config, state.problem
    generation = state.generation
    children: dict[str, dict[str, Any] | None] = {}
    forbidden: set[str] = set()
    if changed:
        generation = int(body.meta.get("generation") or 0)
        problem = None
        try:
            asked = validate(agent, raw, shared.config.defaults)
            spec = planner.pin_task_queue(agent, asked, body.status)
            ignored = planner.queue_edit_ignored(agent, asked, body.status)
            if ignored:  # only under a CRD from before taskQueue was immutable
                log.warning("%s/%s: %s", agent.namespace, agent.name, ignored)
                kopf.warn(body, reason="TaskQueueKept", message=ignored)
            if claims is not None:
                check_queue_free(agent, body, spec, shared.config.defaults.temporal_address, claims)
            config = worker_config(agent, spec, shared.config.defaults)
            missing = await missing_secrets(shared, agent.namespace, spec)
            if missing:
                problem = Problem("SecretMissing", missing)
            else:
                children, forbidden = await live_children(shared, agent)
        except InvalidSpec as err:
            problem = Problem(err.reason, err.detail)
        except ApiException as err:
            problem = Problem("ReconcileError", f"Kubernetes API call failed, retrying: {err}")
        if problem is not None and problem.reason == planner.NO_DURABLE_STORE:
            # The planner releases a ScaledObject that would scale such workers up.
            try:
                children, forbidden = await live_children(shared, agent)
            except ApiException as err:
                problem = Problem("ReconcileError", f"Kubernetes API call failed, retrying: {err}")
    view: TemporalView | None = None
    client: Client | None = None
    if spec is not None and config is not None and planner.needs_temporal(problem):
        listed = status_topics(body.status) if changed else None
        view, client = await read_temporal(shared, state, agent, spec, config, listed)
    obs = Observed(
        agent=agent,
        now=datetime.now(UTC),
        generation=generation,
        defaults=shared.config.defaults,
        spec=spec,
        config=config,
        problem=problem,
        changed=changed,
        children=children,
        forbidden=frozenset(forbidden),
        replicas=await deployment_replicas(shared, agent),
        temporal=view,
        previous_status=dict(body.status),
        schedules_paused=state.schedules_paused,
        history=state.history,
        since_last_write=time.monotonic() - state.last_write if state.last_write else None,
    )
    return obs, client


def check_queue_free(
    agent: render.AgentRef, body: kopf.Body, spec: AgentSpec, default_address: str, claims: Claims
) -> None:
    """Refuse (``TaskQueueShared``) a queue another agent created before this one names."""
    queue = render.task_queue(agent, spec)
    key = queueclaims.queue_key(
        spec.temporal.address or default_address, spec.temporal.namespace, queue
    )
    me = queueclaims.Claim(
        str(body.meta.get("creationTimestamp") or ""), agent.namespace, agent.name
    )
    why = queueclaims.refusal(me, claims.get(key, []), queue)
    if why is not None:
        raise InvalidSpec(agent.namespace, agent.name, why, reason="TaskQueueShared")


async def missing_secrets(shared: Shared, namespace: str, spec: AgentSpec) -> str | None:
    """A message naming the first missing Secret or key, or ``None``."""
    wanted = [(p, r.name, r.key) for p, r in sorted(spec.secret_refs().items())]
    if spec.temporal.tls.secret_name:
        wanted.append(("temporal.tls.secretName", spec.temporal.tls.secret_name, "tls.crt"))
        wanted.append(("temporal.tls.secretName", spec.temporal.tls.secret_name, "tls.key"))
    for where, name, key in wanted:
        secret = await shared.kube.get(path("Secret", namespace, name))
        if secret is None:
            return f"Secret {namespace}/{name} (spec.{where}) not found: create it with key {key!r}"
        if key not in (secret.get("data") or {}):
            return f"Secret {namespace}/{name} (spec.{where}) has no key {key!r}: add it"
    return None


async def live_children(
    shared: Shared, agent: render.AgentRef
) -> tuple[dict[str, dict[str, Any] | None], set[str]]:
    """Every child kind's live object (``None``: absent) and the kinds the operator may not read.

    Without KEDA installed its kinds answer 404 for the whole API group: the
    same as absent. A 403 means the operator was not granted the kind (a chart
    without KEDA support): it cannot have created one either.
    """
    live: dict[str, dict[str, Any] | None] = {}
    forbidden: set[str] = set()
    for kind in CHILD_KINDS:
        name = (
            render.config_map_name(agent) if kind == "ConfigMap" else render.deployment_name(agent)
        )
        try:
            live[kind] = await shared.kube.get(path(kind, agent.namespace, name))
        except ApiException as err:
            if err.status != 403:
                raise
            forbidden.add(kind)
    return live, forbidden


async def deployment_replicas(shared: Shared, agent: render.AgentRef) -> tuple[int, int] | None:
    """The worker Deployment's (spec, ready) replicas: from the watch, else one GET.

    ``None`` when there is none or it is not the agent's (a stranger's is never scaled).
    """
    name = render.deployment_name(agent)
    known = shared.deployments.get((agent.namespace, name))
    if known is not None:
        uid, spec_replicas, ready = known
        return (spec_replicas, ready) if uid == agent.uid else None
    # Not seen on the watch yet (just created, or the operator just started).
    live = await shared.kube.get(path("Deployment", agent.namespace, name))
    return replica_counts(live) if live is not None and apply.owned_by(live, agent.uid) else None


async def connect(shared: Shared, agent: render.AgentRef, spec: AgentSpec) -> Client | Problem:
    """The agent's Temporal client, or the problem that says why there is none."""
    address = spec.temporal.address or shared.config.defaults.temporal_address
    try:
        return await shared.temporal.client(
            agent.namespace, spec, shared.config.defaults.temporal_address
        )
    except (RuntimeError, OSError, TimeoutError) as err:
        return Problem(
            "TemporalUnreachable",
            f"cannot connect to Temporal at {address} (namespace {spec.temporal.namespace}): "
            f"{err}; check spec.temporal.address and its credentials",
        )


def status_topics(previous: Any) -> set[str]:
    """The topics the agent's status knows: those it lists runs of (at most
    ``status.MAX_RUNS_LISTED``) and every topic it records as started."""
    listed = {str(r["topic"]) for r in (previous.get("runs") or []) if r.get("topic")}
    return listed | planner.started_topics(previous)


async def read_temporal(
    shared: Shared,
    state: AgentState,
    agent: render.AgentRef,
    spec: AgentSpec,
    cfg: WorkerConfig,
    listed: set[str] | None = None,
) -> tuple[TemporalView, Client | None]:
    """The agent's task-queue statistics and runs; on a change (``listed``: the
    topics its status lists) its Schedules too."""
    client = await connect(shared, agent, spec)
    if isinstance(client, Problem):
        return TemporalView(problem=client), None
    queue = None
    try:
        queue = await shared.queues.get(client, cfg.task_queue)
        runs = await workflows.observe(
            client, cfg, spec.unique_topics(), state.cache, query_running=queue.pollers > 0
        )
        found = None
        if listed is not None:
            found = await schedules.find(client, cfg, {*spec.unique_topics(), *listed})
        spent = await workflows.day_spent(client, cfg) if queue.pollers > 0 else None
    except RPCError as err:
        return TemporalView(
            queue, problem=Problem("TemporalError", f"Temporal call failed: {err}")
        ), client
    return TemporalView(queue, tuple(runs), schedules=found, ledger_usd=spent), client


# --- execute -------------------------------------------------------------------------


async def execute(
    shared: Shared, state: AgentState, obs: Observed, client: Client | None, plan: Plan
) -> Failure | None:
    """Perform ``plan`` in order; the first step that fails ends it and says why."""
    agent, spec, cfg = obs.agent, obs.spec, obs.config
    if plan.children:
        try:
            for change in plan.children:
                await write_child(shared, agent, change)
        except ApiException as err:
            if err.status == 404 and spec is not None and spec.workers.autoscaler == "keda":
                return Failure(
                    Problem(
                        "KedaNotInstalled",
                        "spec.workers.autoscaler is keda but the ScaledObject API is not "
                        "served: install KEDA or use autoscaler builtin",
                    ),
                    "setup",
                )
            what = f"Kubernetes API call failed, retrying: {err}"
            return Failure(Problem("ReconcileError", what), "setup")
        log.info(
            "%s/%s children: %s", agent.namespace, agent.name, ", ".join(map(str, plan.children))
        )
    if client is not None and cfg is not None and spec is not None:
        failure = await _execute_in_temporal(state, client, cfg, spec, plan)
        if failure is not None:
            return failure
    # Not only after Temporal: workers that must not run (NoDurableStore) are scaled
    # to zero with Temporal never asked.
    if plan.scale is not None and plan.scale.changed:
        await scale(shared, agent, plan.scale)
    return None


async def _execute_in_temporal(
    state: AgentState, client: Client, cfg: WorkerConfig, spec: AgentSpec, plan: Plan
) -> Failure | None:
    """The plan's Temporal steps, in order: Schedules, stops, starts, pauses, budgets."""
    if plan.schedules is not None:
        try:
            await schedules.upsert(
                client, cfg, plan.schedules.upsert, plan.schedules.cron, plan.schedules.paused
            )
            await schedules.delete(client, cfg, plan.schedules.delete)
        except RPCError as err:
            what = f"Temporal refused spec.schedule {spec.schedule!r}: {err}"
            return Failure(Problem("ScheduleInvalid", what), "setup")
    if plan.stop:
        try:
            await workflows.stop_topics(client, cfg, plan.stop, plan.deletion_policy)
        except RPCError as err:
            return Failure(
                Problem("ReconcileError", f"Temporal call failed, retrying: {err}"), "setup"
            )
    try:
        if plan.start:
            topics = [s.topic for s in plan.start]
            if spec.schedule:  # through the Schedules, so their ticks skip while it runs
                topics = await schedules.trigger(client, cfg, topics)
            await workflows.start_topics(client, cfg, topics)
        if plan.pause is not None:
            await schedules.upsert(
                client, cfg, plan.pause.upsert, plan.pause.cron, plan.pause.paused
            )
            state.schedules_paused = plan.pause.paused
        if plan.budgets:
            await workflows.set_budgets(client, plan.budgets)
    except RPCError as err:
        return Failure(Problem("TemporalError", f"Temporal call failed: {err}"), "temporal")
    return None


async def write_child(shared: Shared, agent: render.AgentRef, change: ChildChange) -> None:
    url = path(change.kind, agent.namespace, change.name)
    if change.verb == "create" and change.body is not None:
        await shared.kube.create(path(change.kind, agent.namespace), change.body)
    elif change.verb == "replace" and change.body is not None:
        await shared.kube.replace(url, change.body)
    elif change.verb == "delete":
        await shared.kube.delete(url)


async def scale(shared: Shared, agent: render.AgentRef, decision: planner.Scale) -> None:
    url = path("Deployment", agent.namespace, render.deployment_name(agent), "scale")
    await shared.kube.merge_patch(url, {"spec": {"replicas": decision.desired}})
    direction = "up" if decision.desired > decision.current else "down"
    metrics.SCALE_EVENTS.labels(agent.namespace, agent.name, direction).inc()
    log.info(
        "%s/%s scaled %d -> %d: %s",
        agent.namespace,
        agent.name,
        decision.current,
        decision.desired,
        decision.reason,
    )

"""The service behind the handlers: reconcile, refresh status and autoscale, finalize.

Handlers stay thin (:mod:`.handlers`); this module holds the order of
operations and the mapping of every failure to a ``Ready=False`` reason with a
message saying what to fix. User input never raises out of here except as a
Kopf error that says whether retrying can help: :class:`kopf.TemporaryError`
with a delay for things that may appear (a Secret, a reachable Temporal),
nothing at all for things only a spec edit can fix (the status says which).
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

from steadfast_contract.agentfile import AgentError
from steadfast_contract.config import WorkerConfig
from steadfast_contract.pricing import UnknownModelError, lookup
from steadfast_contract.spec import AgentSpec
from steadfast_operator import apply, autoscale, metrics, render, runs, status
from steadfast_operator.kube import path
from steadfast_operator.spec import InvalidSpec, check_semantics, parse_spec
from steadfast_operator.startup import Shared

log = logging.getLogger(__name__)

RETRY_SECRET = 15.0
RETRY_TEMPORAL = 10.0
RETRY_KEDA = 120.0


@dataclass
class AgentState:
    """Per-agent memory between ticks (lost on restart, rebuilt safely)."""

    problem: status.Problem | None = None
    history: autoscale.History = field(default_factory=autoscale.History)
    cache: runs.RunCache = field(default_factory=runs.RunCache)
    config: WorkerConfig | None = None
    spec: AgentSpec | None = None
    generation: int = 0
    schedules_paused: bool = False
    last_write: float = 0.0
    """Monotonic time of the last status write (volatile fields are throttled)."""
    """Whether the agent's Schedules were last left paused (daily budget spent)."""


def replica_counts(deployment: dict[str, Any]) -> tuple[int, int]:
    """(spec replicas, ready replicas) of a Deployment object."""
    spec = deployment.get("spec") or {}
    live_status = deployment.get("status") or {}
    return int(spec.get("replicas") or 0), int(live_status.get("readyReplicas") or 0)


def agent_of(body: kopf.Body) -> render.Agent:
    return render.Agent(
        name=body.meta["name"], namespace=body.meta["namespace"], uid=body.meta["uid"]
    )


def _output_price(spec: AgentSpec) -> float | None:
    try:
        return lookup(spec.model.name).output_per_mtok
    except UnknownModelError:
        return None


def validate(shared: Shared, agent: render.Agent, raw: dict[str, Any]) -> AgentSpec:
    spec = parse_spec(agent.namespace, agent.name, raw)
    d = shared.config.defaults
    check_semantics(
        agent.namespace,
        agent.name,
        spec,
        default_image=d.image,
        default_temporal_address=d.temporal_address,
        output_price_per_mtok=_output_price(spec),
    )
    return spec


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


async def connect(shared: Shared, agent: render.Agent, spec: AgentSpec) -> Client:
    address = spec.temporal.address or shared.config.defaults.temporal_address
    try:
        return await shared.temporal.client(
            agent.namespace, spec, shared.config.defaults.temporal_address
        )
    except (RuntimeError, OSError, TimeoutError) as err:
        raise UnreadyError(
            "TemporalUnreachable",
            f"cannot connect to Temporal at {address} (namespace {spec.temporal.namespace}): "
            f"{err}; check spec.temporal.address and its credentials",
            RETRY_TEMPORAL,
        ) from None


class UnreadyError(Exception):
    def __init__(self, reason: str, message: str, retry: float | None) -> None:
        super().__init__(message)
        self.problem = status.Problem(reason, message)
        self.retry = retry


async def reconcile(shared: Shared, state: AgentState, body: kopf.Body, patch: kopf.Patch) -> None:
    """Create/update/resume: validate, check Secrets, apply children, start runs."""
    agent = agent_of(body)
    started = time.perf_counter()
    outcome = "ok"
    try:
        async with shared.lock(agent.namespace, agent.name):
            await _reconcile(shared, state, agent, body)
        state.problem = None
    except InvalidSpec as err:
        outcome = "invalid"
        state.problem = status.Problem(err.reason, err.detail)
    except UnreadyError as err:
        outcome = "unready"
        state.problem = err.problem
        if err.retry is not None:
            await refresh(shared, state, body, patch)
            raise kopf.TemporaryError(err.problem.message, delay=err.retry) from None
    except (ApiException, RPCError) as err:
        # Not the user's doing (an API server or Temporal hiccup): say so, retry soon.
        outcome = "error"
        what = "Kubernetes API" if isinstance(err, ApiException) else "Temporal"
        state.problem = status.Problem("ReconcileError", f"{what} call failed, retrying: {err}")
        await refresh(shared, state, body, patch)
        raise kopf.TemporaryError(state.problem.message, delay=RETRY_TEMPORAL) from None
    finally:
        metrics.RECONCILES.labels("reconcile", outcome).inc()
        metrics.RECONCILE_SECONDS.labels("reconcile").observe(time.perf_counter() - started)
    await refresh(shared, state, body, patch)


async def _reconcile(
    shared: Shared, state: AgentState, agent: render.Agent, body: kopf.Body
) -> None:
    raw = dict(body.spec)
    state.generation = int(body.meta.get("generation") or 0)
    state.spec = spec = validate(shared, agent, raw)
    try:
        state.config = cfg = render.worker_config(agent, spec, raw, shared.config.defaults)
    except AgentError as err:
        raise InvalidSpec(agent.namespace, agent.name, str(err)) from None
    missing = await missing_secrets(shared, agent.namespace, spec)
    if missing:
        raise UnreadyError("SecretMissing", missing, RETRY_SECRET)
    children = render.children(agent, spec, raw, shared.config.defaults)
    try:
        result = await apply.apply_children(
            shared.kube, children, agent.namespace, render.deployment_name(agent), agent.uid
        )
    except ApiException as err:
        if err.status == 404 and spec.workers.autoscaler == "keda":
            raise UnreadyError(
                "KedaNotInstalled",
                "spec.workers.autoscaler is keda but the ScaledObject API is not served: "
                "install KEDA or use autoscaler builtin",
                RETRY_KEDA,
            ) from None
        raise
    if result.wrote:
        log.info("%s/%s children: %s", agent.namespace, agent.name, result)
    client = await connect(shared, agent, spec)
    topics = spec.unique_topics()
    previous = {r.get("topic") for r in (body.status.get("runs") or [])}
    removed = sorted(t for t in previous if t and t not in topics)
    try:
        await runs.sync_schedules(
            client, cfg, topics, spec.schedule, removed, paused=state.schedules_paused
        )
    except RPCError as err:
        raise UnreadyError(
            "ScheduleInvalid", f"Temporal refused spec.schedule {spec.schedule!r}: {err}", None
        ) from None
    if removed:
        await runs.stop_topics(client, cfg, removed, spec.deletion_policy)


async def refresh(shared: Shared, state: AgentState, body: kopf.Body, patch: kopf.Patch) -> None:
    """Status, autoscaling and starts due: the timer's work, also run after a reconcile."""
    agent = agent_of(body)
    started = time.perf_counter()
    try:
        async with shared.lock(agent.namespace, agent.name):
            await _refresh(shared, state, agent, body, patch)
    finally:
        metrics.RECONCILE_SECONDS.labels("refresh").observe(time.perf_counter() - started)


async def _refresh(
    shared: Shared,
    state: AgentState,
    agent: render.Agent,
    body: kopf.Body,
    patch: kopf.Patch,
) -> None:
    now = datetime.now(UTC)
    spec, cfg, problem = state.spec, state.config, state.problem
    generation = int(body.meta.get("generation") or 0)
    dep = shared.deployments.get((agent.namespace, render.deployment_name(agent)))
    if dep is None:
        # Not seen on the watch yet (just created, or the operator just started).
        live = await shared.kube.get(
            path("Deployment", agent.namespace, render.deployment_name(agent))
        )
        dep = replica_counts(live) if live is not None else None
    current, ready = dep if dep is not None else (0, 0)
    queue: status.QueueInfo | None = None
    observed: list[status.RunInfo] = []
    desired = current
    if spec is None:
        if problem is None:
            return  # not reconciled yet (the resume handler runs first); nothing to report
        # The spec never validated: report the problem with the schema's defaults.
        spec = parse_spec(agent.namespace, agent.name, {"topics": ["-"]})
    elif cfg is not None and (problem is None or problem.reason == "ScheduleInvalid"):
        try:
            client = await connect(shared, agent, spec)
            queue = await shared.queues.get(client, cfg.task_queue)
            observed = await runs.observe(
                client, cfg, spec.unique_topics(), state.cache, query_running=queue.pollers > 0
            )
            exhausted = status.budget_exhausted(spec, observed, now)
            if not exhausted:
                seen = {r.topic for r in observed}
                due = [t for t in spec.unique_topics() if t not in seen]
                if due:
                    await runs.start_topics(client, cfg, due)
            if spec.schedule and problem is None and exhausted != state.schedules_paused:
                # Only on a change of the day's budget state: an update per topic per
                # tick would cost Temporal calls for nothing.
                await runs.sync_schedules(
                    client, cfg, spec.unique_topics(), spec.schedule, [], paused=exhausted
                )
                state.schedules_paused = exhausted
        except UnreadyError as err:
            problem = err.problem
        except RPCError as err:
            problem = status.Problem("TemporalError", f"Temporal call failed: {err}")
        if queue is not None and dep is not None and spec.workers.autoscaler == "builtin":
            desired = await _autoscale(shared, state, agent, spec, queue, observed, current)
    doc = status.build_status(
        generation=generation if state.generation == generation else state.generation,
        spec=spec,
        runs=observed,
        queue=queue,
        desired=desired,
        ready=ready,
        selector=render.selector_string(agent),
        problem=problem,
        previous=body.status,
        now=now,
        last_active=(
            datetime.fromtimestamp(state.history.last_active, UTC)
            if state.history.last_active
            else None
        ),
    )
    if not observed and body.status.get("runs"):
        # Temporal was unreachable: keep what is known instead of blanking it.
        for key in ("runs", "runsSummary", "cost"):
            doc.pop(key, None)
    since = time.monotonic() - state.last_write if state.last_write else None
    if status.needs_write(body.status, doc, since):
        patch.status.update(doc)
        state.last_write = time.monotonic()
    _export(agent, doc, queue, state.spec)


async def _autoscale(
    shared: Shared,
    state: AgentState,
    agent: render.Agent,
    spec: AgentSpec,
    queue: status.QueueInfo,
    observed: list[status.RunInfo],
    current: int,
) -> int:
    w = spec.workers
    decision = autoscale.decide(
        autoscale.Observation(
            backlog=queue.backlog,
            backlog_age_seconds=queue.backlog_age_seconds,
            add_rate=queue.add_rate,
            dispatch_rate=queue.dispatch_rate,
            pollers=queue.pollers,
            running_workflows=sum(1 for r in observed if r.running),
        ),
        current,
        autoscale.Limits(
            w.min_replicas,
            w.max_replicas,
            w.target_backlog_per_worker,
            w.scale_down_delay.total_seconds(),
        ),
        state.history,
        time.time(),
    )
    if decision.desired != current:
        url = path("Deployment", agent.namespace, render.deployment_name(agent), "scale")
        await shared.kube.merge_patch(url, {"spec": {"replicas": decision.desired}})
        direction = "up" if decision.desired > current else "down"
        metrics.SCALE_EVENTS.labels(agent.namespace, agent.name, direction).inc()
        log.info(
            "%s/%s scaled %d -> %d: %s",
            agent.namespace,
            agent.name,
            current,
            decision.desired,
            decision.reason,
        )
    return decision.desired


def _export(
    agent: render.Agent,
    doc: dict[str, Any],
    queue: status.QueueInfo | None,
    spec: AgentSpec | None,
) -> None:
    """Set the agent's gauges from the status just built and the spec in force.

    ``spec`` is the last spec that validated (the one the workers run with); the
    daily budget is not exported before there is one, because the schema's
    defaults that stand in for an invalid spec are nobody's budget.
    """
    ns, name = agent.namespace, agent.name
    if spec is not None:
        metrics.AGENT_BUDGET.labels(ns, name).set(spec.budget.max_usd_per_day)
    else:
        metrics.forget_budget(ns, name)
    workers = doc.get("workers", {})
    metrics.WORKERS_DESIRED.labels(ns, name).set(workers.get("desired", 0))
    metrics.WORKERS_READY.labels(ns, name).set(workers.get("ready", 0))
    if "cost" in doc:
        metrics.AGENT_COST.labels(ns, name, "total").set(doc["cost"]["totalUSD"])
        metrics.AGENT_COST.labels(ns, name, "today").set(doc["cost"]["todayUSD"])
    if queue is not None:
        metrics.BACKLOG.labels(ns, name, queue.name).set(queue.backlog)
        metrics.BACKLOG_AGE.labels(ns, name, queue.name).set(queue.backlog_age_seconds)


async def finalize(shared: Shared, state: AgentState, body: kopf.Body) -> None:
    """Before the agent goes: apply deletionPolicy to its runs, delete its Schedules.

    Children need no deleting here: their owner references let the garbage
    collector remove them once the agent is gone.
    """
    agent = agent_of(body)
    raw = dict(body.spec)
    try:
        spec = parse_spec(agent.namespace, agent.name, raw)
        cfg = render.worker_config(agent, spec, raw, shared.config.defaults)
    except (InvalidSpec, AgentError):
        # Nothing to stop for a spec that does not validate now, but the agent's
        # series (and an earlier valid spec's backlog) must still go.
        queue = state.config.task_queue if state.config is not None else ""
        metrics.forget_agent(agent.namespace, agent.name, queue)
        return
    async with shared.lock(agent.namespace, agent.name):
        try:
            client = await connect(shared, agent, spec)
        except UnreadyError as err:
            raise kopf.TemporaryError(err.problem.message, delay=RETRY_TEMPORAL) from None
        previous = {r.get("topic") for r in (body.status.get("runs") or []) if r.get("topic")}
        topics = sorted(set(spec.unique_topics()) | previous)
        await runs.sync_schedules(client, cfg, [], "", topics, paused=False)
        stopped = await runs.stop_topics(client, cfg, topics, spec.deletion_policy)
        log.info(
            "%s/%s deleted: %s %d running workflows",
            agent.namespace,
            agent.name,
            "cancelled" if spec.deletion_policy == "Cancel" else "abandoned",
            stopped,
        )
    metrics.forget_agent(agent.namespace, agent.name, cfg.task_queue)
    shared.locks.pop((agent.namespace, agent.name), None)

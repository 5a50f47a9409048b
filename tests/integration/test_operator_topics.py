"""The operator's topic decisions against the real Temporal dev server.

Each test drives the operator's own pass (observe Temporal with
:mod:`steadfast_operator.workflows` and :mod:`.schedules`, plan with
:func:`steadfast_operator.planner.plan`, perform the plan with
:func:`steadfast_operator.reconcile.execute`), carrying the status from one
pass to the next as the API server would; only the Kubernetes children are
left out (no cluster here: the e2e tier has them).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from tests.integration.conftest import HarnessFactory

from steadfast_contract import ids, starter
from steadfast_operator import planner, reconcile, render, schedules, workflows
from steadfast_operator.planner import Observed, Plan, TemporalView
from steadfast_operator.spec import validate, worker_config
from steadfast_operator.status import QueueInfo

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

T = TypeVar("T")
DEFAULTS = render.Defaults(image="steadfast/worker:it", temporal_address="unused:7233")
CRON = "0 6 * * 1"


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], within: float = 60.0
) -> T:
    """``probe()`` until ``ok`` says yes or ``within`` seconds passed; its last value.

    A deleted run leaves the list (visibility) in a queue task of its own, after
    ``describe`` already fails; with two test processes on two cores it once took
    more than 20 s, so the wait is a minute (it ends as soon as ``ok`` holds)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if ok(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.3)


def raw_spec(topics: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "topics": topics,
        "search": {"endpoint": "http://127.0.0.1:1/search"},
        "storage": {"postgresSecretRef": {"name": "reports-db", "key": "dsn"}},
        **extra,
    }


@dataclass
class Agent:
    """One agent as the operator sees it, pass after pass (its status carried along)."""

    client: Client
    ref: render.AgentRef
    status: dict[str, Any] = field(default_factory=dict)
    cache: workflows.RunCache = field(default_factory=workflows.RunCache)
    generation: int = 0

    async def tick(self, raw: dict[str, Any], *, changed: bool = False) -> Plan:
        """One pass: observe Temporal, plan, perform the plan, keep the status."""
        self.generation += int(changed)
        spec = planner.pin_task_queue(self.ref, validate(self.ref, raw, DEFAULTS), self.status)
        cfg = worker_config(self.ref, spec, DEFAULTS)
        topics = spec.unique_topics()
        runs = await workflows.observe(self.client, cfg, topics, self.cache, query_running=False)
        found = None
        if changed:
            known = {*topics, *reconcile.status_topics(self.status)}
            found = await schedules.find(self.client, cfg, known)
        obs = Observed(
            agent=self.ref,
            now=datetime.now(UTC),
            generation=self.generation,
            defaults=DEFAULTS,
            spec=spec,
            config=cfg,
            changed=changed,
            temporal=TemporalView(QueueInfo(cfg.task_queue), tuple(runs), schedules=found),
            previous_status=dict(self.status),
        )
        # No cluster here: the children and the scale are the e2e tier's to check.
        plan = replace(planner.plan(obs), children=(), scale=None)
        state = reconcile.AgentState()
        failure = await reconcile.execute(cast(Any, None), state, obs, self.client, plan)
        assert failure is None, failure
        self.status.update(plan.status or {})  # what the status patch does
        return plan


def agent(client: Client, name: str, namespace: str = "it") -> Agent:
    return Agent(client, render.AgentRef(name=name, namespace=namespace, uid=uuid.uuid4().hex))


async def delete_from_temporal(client: Client, workflow_id: str) -> None:
    """What retention (or ``temporal workflow delete``) does to a closed run."""
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id),
        )
    )


async def exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_a_completed_run_deleted_from_temporal_is_not_run_again(
    temporal_client: Client, harness: HarnessFactory
) -> None:
    name = f"done{uuid.uuid4().hex[:6]}"
    a = agent(temporal_client, name)
    queue = ids.default_task_queue("it", name)
    # This harness's worker is the agent's: same namespace, agent and task queue.
    overrides = {"agent": name, "namespace": "it", "temporal": {"taskQueue": queue}}
    async with harness(overrides) as h:
        first = await a.tick(raw_spec(["finished topic"]), changed=True)
        assert [s.topic for s in first.start] == ["finished topic"]
        wf_id = ids.workflow_id("it", name, "finished topic")
        result = await temporal_client.get_workflow_handle(wf_id).result()
        assert result["status"]["phase"] == "Completed"
        await a.tick(raw_spec(["finished topic"]))

        await delete_from_temporal(temporal_client, wf_id)
        await eventually(lambda: exists(temporal_client, wf_id), lambda e: not e)
        gone = await eventually(
            lambda: workflows.observe(
                temporal_client,
                h.config,
                ["finished topic"],
                workflows.RunCache(),
                query_running=False,
            ),
            lambda runs: runs == [],
        )
        assert gone == []

        # Ticks and a change after Temporal forgot the run: nothing starts again.
        for changed in (False, True, False):
            plan = await a.tick(raw_spec(["finished topic"]), changed=changed)
            assert plan.start == ()
        assert not await exists(temporal_client, wf_id)
        served = h.sim.served("llm")
        assert len(served) == 2  # one run: queries and report, each served once
        assert set(served.values()) == {1}


async def test_an_agent_running_before_the_upgrade_keeps_its_runs_and_queue(
    temporal_client: Client, harness: HarnessFactory
) -> None:
    """Upgrade: runs started by the old operator (old default queue, ids unchanged), a
    status without ``startedTopics``; then Temporal forgets the finished run."""
    name = f"old{uuid.uuid4().hex[:6]}"
    legacy = ids.legacy_task_queue("it", name)
    overrides = {"agent": name, "namespace": "it", "temporal": {"taskQueue": legacy}}
    async with harness(overrides) as h:
        done = await h.run("researched before the upgrade")
        assert done.status.phase == "Completed"
        a = agent(temporal_client, name)
        # What the old operator left in the status: the queue, a run line, no record.
        a.status = {
            "taskQueue": {"name": legacy},
            "runs": [{"topic": "researched before the upgrade", "phase": "Completed"}],
        }
        topics = ["researched before the upgrade", "added after the upgrade"]
        plan = await a.tick(raw_spec(topics), changed=True)
        assert [s.topic for s in plan.start] == ["added after the upgrade"]
        assert plan.status is not None
        assert plan.status["taskQueue"]["name"] == legacy
        # The new run is served by the worker on the old queue, as the running ones are.
        added = ids.workflow_id("it", name, "added after the upgrade")
        assert (await temporal_client.get_workflow_handle(added).result())["status"][
            "phase"
        ] == "Completed"

        old = ids.workflow_id("it", name, "researched before the upgrade")
        await delete_from_temporal(temporal_client, old)
        await eventually(lambda: exists(temporal_client, old), lambda e: not e)
        await eventually(
            lambda: workflows.observe(
                temporal_client, h.config, topics, workflows.RunCache(), query_running=False
            ),
            lambda runs: [r.topic for r in runs] == ["added after the upgrade"],
        )
        for changed in (False, True):
            assert (await a.tick(raw_spec(topics), changed=changed)).start == ()
        assert sorted(a.status["startedTopics"]) == sorted(topics)
        assert a.status["taskQueue"]["name"] == legacy


async def test_a_task_queue_edited_past_an_older_crd_is_not_followed(
    temporal_client: Client, harness: HarnessFactory
) -> None:
    """The CRD refuses a taskQueue edit; under one from before that rule, the operator
    keeps the queue its runs and its day's ledger are on."""
    name = f"mv{uuid.uuid4().hex[:6]}"
    queue = f"first.{name}"
    overrides = {"agent": name, "namespace": "it", "temporal": {"taskQueue": queue}}
    async with harness(overrides) as h:
        a = agent(temporal_client, name)
        plan = await a.tick(raw_spec(["before"], temporal={"taskQueue": queue}), changed=True)
        assert [s.topic for s in plan.start] == ["before"]
        first = await temporal_client.get_workflow_handle(plan.start[0].workflow_id).result()
        assert first["status"]["phase"] == "Completed"
        assert a.status["taskQueue"]["name"] == queue

        moved = raw_spec(["before", "after"], temporal={"taskQueue": f"moved.{name}"})
        plan = await a.tick(moved, changed=True)
        assert plan.status is not None
        assert plan.status["taskQueue"]["name"] == queue
        # The new topic's run is on the agent's queue, served by its worker there;
        # started on the edited queue it would wait for a worker for ever.
        (added,) = plan.start
        handle = temporal_client.get_workflow_handle(added.workflow_id)
        second = await asyncio.wait_for(handle.result(), timeout=60)
        assert second["status"]["phase"] == "Completed"
        description = await handle.describe()
        assert description.raw_description.execution_config.task_queue.name == queue
        # One day's ledger holds both runs' spend.
        day = await workflows.day_spent(temporal_client, h.config)
        spent = first["status"]["cost_usd"] + second["status"]["cost_usd"]
        assert day is not None
        assert spent > 0
        assert day == pytest.approx(spent)


async def terminate(client: Client, workflow_ids: list[str]) -> None:
    """End the runs nobody polls for (the dev server is shared by the session)."""
    gate = asyncio.Semaphore(20)

    async def one(wf_id: str) -> None:
        async with gate:
            with contextlib.suppress(RPCError):
                await client.get_workflow_handle(wf_id).terminate("test over")

    await asyncio.gather(*(one(w) for w in workflow_ids))


async def scheduled_runs(client: Client, workflow_id: str, *, running: bool = False) -> list[str]:
    """The ids of the runs the topic's Schedule started (``<workflow id>-<time>``)."""
    query = f"TemporalScheduledById = '{ids.schedule_id(workflow_id)}'"
    if running:
        query += " AND ExecutionStatus = 'Running'"
    return [wf.id async for wf in client.list_workflows(query)]


async def start_runs(client: Client, a: Agent, topics: list[str], reruns: int) -> list[str]:
    """One run per topic and a second one of the first ``reruns`` topics (no worker)."""
    spec = validate(a.ref, raw_spec(topics), DEFAULTS)
    cfg = worker_config(a.ref, spec, DEFAULTS)
    gate = asyncio.Semaphore(20)

    async def one(topic: str, again: bool) -> str:
        async with gate:
            if again:
                wf_id = ids.workflow_id(cfg.namespace, cfg.agent, topic)
                await client.get_workflow_handle(wf_id).terminate("first of two runs")
            return (await starter.start_topic(client, cfg, topic, rerun=again)).run_id

    run_ids = await asyncio.gather(*(one(t, False) for t in topics))
    run_ids += await asyncio.gather(*(one(t, True) for t in topics[:reruns]))
    return list(run_ids)


async def test_sibling_agents_with_250_runs_each_see_exactly_their_own(
    temporal_client: Client,
) -> None:
    stem = f"news{uuid.uuid4().hex[:6]}"
    news, news_eu = agent(temporal_client, stem), agent(temporal_client, f"{stem}-eu")
    topics = [f"story {i}" for i in range(200)]  # the spec's most; 50 of them run twice
    mine = await start_runs(temporal_client, news, topics, 50)
    theirs = await start_runs(temporal_client, news_eu, topics, 50)
    assert len(set(mine)) == len(set(theirs)) == 250

    for a, expected, other in ((news, mine, theirs), (news_eu, theirs, mine)):
        plan = await a.tick(raw_spec(topics))
        # Every topic was started: none starts again, whatever the sibling ran.
        assert plan.start == ()
        spec = validate(a.ref, raw_spec(topics), DEFAULTS)
        cfg = worker_config(a.ref, spec, DEFAULTS)
        runs = await workflows.observe(
            temporal_client, cfg, topics, workflows.RunCache(), query_running=False
        )
        assert sorted(r.run_id for r in runs) == sorted(expected)
        assert not {r.run_id for r in runs} & set(other)
        assert {r.workflow_id for r in runs} == {
            ids.workflow_id("it", a.ref.name, t) for t in topics
        }
    # Two queues, two id sets: nothing shared.
    assert ids.default_task_queue("it", stem) != ids.default_task_queue("it", f"{stem}-eu")
    await terminate(
        temporal_client,
        [ids.workflow_id("it", a.ref.name, t) for a in (news, news_eu) for t in topics],
    )


async def test_sixty_scheduled_topics_one_removed_one_added_and_removed_within_a_tick(
    temporal_client: Client,
) -> None:
    name = f"sched{uuid.uuid4().hex[:6]}"
    a = agent(temporal_client, name)
    topics = [f"topic {i}" for i in range(60)]
    cfg = worker_config(a.ref, validate(a.ref, raw_spec(topics), DEFAULTS), DEFAULTS)
    try:
        first = await a.tick(raw_spec(topics, schedule=CRON), changed=True)
        assert len(first.start) == 60
        # Edit 1: "topic 7" goes, "flash" comes; edit 2 at once, before any tick: flash goes.
        edited = [t for t in topics if t != "topic 7"]
        add = await a.tick(raw_spec([*edited, "flash"], schedule=CRON), changed=True)
        assert [s.topic for s in add.start] == ["flash"]
        await a.tick(raw_spec(edited, schedule=CRON), changed=True)

        def sched(topic: str) -> str:
            return ids.schedule_id(ids.workflow_id("it", name, topic))

        found = await eventually(
            lambda: schedules.find(temporal_client, cfg, topics), lambda f: len(f) == 59
        )
        assert sorted(found.values()) == sorted(edited)
        for topic in ("flash", "topic 7"):
            with pytest.raises(RPCError) as err:
                await temporal_client.get_schedule_handle(sched(topic)).describe()
            assert err.value.status == RPCStatusCode.NOT_FOUND
            # Its first run was the Schedule's; it was found and cancelled all the same.
            (run,) = await scheduled_runs(temporal_client, ids.workflow_id("it", name, topic))
            handle = temporal_client.get_workflow_handle(run)
            events = [e.event_type async for e in handle.fetch_history_events()]
            assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in events, topic
        assert sorted(a.status["startedTopics"]) == sorted(edited)
    finally:
        await schedules.delete(temporal_client, cfg, [*topics, "flash"])
        started = [
            run
            for t in [*topics, "flash"]
            for run in await scheduled_runs(temporal_client, ids.workflow_id("it", name, t))
        ]
        await terminate(temporal_client, started)


async def test_a_scheduled_topics_first_run_is_the_schedules_so_its_ticks_skip_for_it(
    temporal_client: Client,
) -> None:
    """The first run of a topic with a schedule was started beside its Schedule, which
    sees only its own runs: a tick while that run went on started a second run of the
    topic, paid for again (the audit). It is started through the Schedule now, and the
    tick is skipped for it."""
    name = f"tick{uuid.uuid4().hex[:6]}"
    a = agent(temporal_client, name)
    cfg = worker_config(a.ref, validate(a.ref, raw_spec(["weekly"]), DEFAULTS), DEFAULTS)
    wf_id = ids.workflow_id("it", name, "weekly")
    sched = temporal_client.get_schedule_handle(ids.schedule_id(wf_id))
    try:
        first = await a.tick(raw_spec(["weekly"], schedule=CRON), changed=True)
        assert [s.topic for s in first.start] == ["weekly"]
        info = (await sched.describe()).info
        assert (info.num_actions, len(info.running_actions)) == (1, 1)
        assert not await exists(temporal_client, wf_id)  # no run beside the Schedule
        await sched.trigger()  # the cron's tick, while the first run goes on (no worker)
        info = (
            await eventually(sched.describe, lambda d: d.info.num_actions_skipped_overlap >= 1, 30)
        ).info
        assert (info.num_actions, info.num_actions_skipped_overlap) == (1, 1)
        assert len(await scheduled_runs(temporal_client, wf_id, running=True)) == 1
        # Recorded as started: the passes after start nothing more.
        assert a.status["startedTopics"] == ["weekly"]
        assert (await a.tick(raw_spec(["weekly"], schedule=CRON))).start == ()
    finally:
        await schedules.delete(temporal_client, cfg, ["weekly"])
        await terminate(temporal_client, await scheduled_runs(temporal_client, wf_id))

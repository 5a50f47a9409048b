"""The operator's Temporal side against the real dev server: starts, schedules, stats.

No worker polls these task queues, so started workflows stay running with their
first workflow task in the backlog: exactly what the autoscaler has to see. The
last test runs one workflow to its budget with a worker, then observes it without.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import kubernetes_asyncio.client as k8s
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode
from tests.integration.conftest import HarnessFactory

from steadfast_contract import budget, ids, models, pricing, starter
from steadfast_contract.config import WorkerConfig, parse_config
from steadfast_dev import chaos
from steadfast_operator import schedules, status, taskqueues, workflows
from steadfast_operator.kube import Kube
from steadfast_operator.spec import parse_spec
from steadfast_operator.temporal_pool import TemporalPool
from steadfast_worker.pipeline import QUERY_PROMPT_CHARS

pytestmark = pytest.mark.integration

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], within: float = 15.0
) -> T:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if ok(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.3)


def config(agent: str, task_queue: str) -> WorkerConfig:
    return parse_config(
        {
            "agent": agent,
            "namespace": "it",
            "temporal": {"taskQueue": task_queue},
            "search": {"endpoint": "http://127.0.0.1:1/search"},
        }
    )


@pytest.fixture
def agent() -> str:
    return f"a{uuid.uuid4().hex[:8]}"


async def test_starts_are_idempotent_and_observed(
    temporal_client: Client, task_queue: str, agent: str
) -> None:
    cfg = config(agent, task_queue)
    topics = ["alpha", "beta", "gamma"]
    first = await workflows.start_topics(temporal_client, cfg, topics)
    again = await workflows.start_topics(temporal_client, cfg, topics)
    assert sorted(first) == sorted(ids.workflow_id("it", agent, t) for t in topics)
    assert again == []

    # An agent whose name extends this one's must not be counted as this agent's.
    other = config(agent + "-b", task_queue + "-b")
    await workflows.start_topics(temporal_client, other, ["alpha"])

    cache = workflows.RunCache()
    seen = await eventually(
        lambda: workflows.observe(temporal_client, cfg, topics, cache, query_running=False),
        lambda rs: len(rs) == 3,
    )
    assert sorted(r.topic for r in seen) == topics
    assert all(r.running and r.phase == "Running" for r in seen)


async def test_backlog_and_stats_shared(
    temporal_client: Client, task_queue: str, agent: str
) -> None:
    cfg = config(agent, task_queue)
    await workflows.start_topics(temporal_client, cfg, ["one", "two", "three", "four"])
    stats = taskqueues.QueueStats(max_age=60.0)
    info = await eventually(
        lambda: stats.get(temporal_client, task_queue, fresh=True), lambda i: i.backlog >= 4
    )
    assert info.backlog == 4
    assert info.pollers == 0
    calls = stats.calls
    # Many agents asking at once for the same queue cost one describe.
    answers = await asyncio.gather(*(stats.get(temporal_client, task_queue) for _ in range(20)))
    assert {a.backlog for a in answers} == {4}
    assert stats.calls == calls


async def test_a_shared_describe_outlives_the_cancel_of_the_caller_that_asked(
    temporal_client: Client, task_queue: str
) -> None:
    """Agents on one queue share the describe in flight; when the agent that asked is
    cancelled (deleted mid-tick), the others get an answer, not its cancel."""
    stats = taskqueues.QueueStats(max_age=60.0)
    asking = asyncio.ensure_future(stats.get(temporal_client, task_queue, fresh=True))
    await asyncio.sleep(0)  # its describe is in flight
    sharing = asyncio.ensure_future(stats.get(temporal_client, task_queue, fresh=True))
    await asyncio.sleep(0)  # and the second caller waits on it
    assert stats.calls == 1
    asking.cancel()
    info = await asyncio.wait_for(sharing, 10)
    assert info.name == task_queue
    assert asking.cancelled()
    assert stats.calls == 2  # the second caller asked again itself


async def test_cancel_policy(temporal_client: Client, task_queue: str, agent: str) -> None:
    cfg = config(agent, task_queue)
    await workflows.start_topics(temporal_client, cfg, ["keep", "drop"])
    cache = workflows.RunCache()
    await eventually(
        lambda: workflows.observe(
            temporal_client, cfg, ["keep", "drop"], cache, query_running=False
        ),
        lambda rs: len(rs) == 2,
    )
    assert len(await workflows.stop_topics(temporal_client, cfg, ["drop"], "Abandon")) == 1
    assert len(await workflows.stop_topics(temporal_client, cfg, ["drop"], "Cancel")) == 1

    async def cancel_requested(topic: str) -> bool:
        handle = temporal_client.get_workflow_handle(ids.workflow_id("it", agent, topic))
        events = [e.event_type async for e in handle.fetch_history_events()]
        return EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in events

    assert await cancel_requested("drop")
    assert not await cancel_requested("keep")


async def test_schedules_and_runs_nobody_lists_are_found_exactly(
    temporal_client: Client, task_queue: str, agent: str
) -> None:
    """What deletion finds in Temporal: the agent's own, not a sibling's with its prefix."""
    cfg = config(agent, task_queue)
    sibling = config(agent + "-eu", task_queue + "-eu")
    cron = "0 6 * * 1"
    await schedules.upsert(temporal_client, cfg, ["listed", "forgotten"], cron, paused=True)
    await schedules.upsert(temporal_client, sibling, ["theirs"], cron, paused=True)
    await workflows.start_topics(temporal_client, cfg, ["listed", "forgotten"])
    await workflows.start_topics(temporal_client, sibling, ["theirs"])
    try:
        mine = {
            f"{ids.workflow_id('it', agent, 'listed')}-schedule": "listed",
            f"{ids.workflow_id('it', agent, 'forgotten')}-schedule": "forgotten",
        }
        found = await eventually(
            lambda: schedules.find(temporal_client, cfg, ["listed"]), lambda f: f == mine
        )
        assert found == mine

        async def running() -> int:
            query = f"WorkflowId STARTS_WITH '{ids.workflow_id_prefix('it', agent)}'"
            return len([w async for w in temporal_client.list_workflows(query)])

        await eventually(running, lambda n: n == 3)
        stopped = await workflows.stop_topics(
            temporal_client, cfg, ["listed"], "Cancel", unlisted=True
        )
        assert len(stopped) == 2

        async def cancel_requested(wf_id: str) -> bool:
            handle = temporal_client.get_workflow_handle(wf_id)
            events = [e.event_type async for e in handle.fetch_history_events()]
            return EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in events

        assert await cancel_requested(ids.workflow_id("it", agent, "forgotten"))
        assert not await cancel_requested(ids.workflow_id("it", agent + "-eu", "theirs"))
    finally:
        await schedules.delete(temporal_client, cfg, ["listed", "forgotten"])
        await schedules.delete(temporal_client, sibling, ["theirs"])


async def test_schedules_follow_the_spec(
    temporal_client: Client, task_queue: str, agent: str
) -> None:
    cfg = config(agent, task_queue)
    sched = schedules.schedule_id(ids.workflow_id("it", agent, "weekly"))
    await schedules.upsert(temporal_client, cfg, ["weekly"], "0 6 * * 1", paused=False)
    desc = await temporal_client.get_schedule_handle(sched).describe()
    # The server stores a cron as calendar specs.
    (cal,) = desc.schedule.spec.calendars
    assert (cal.hour[0].start, cal.day_of_week[0].start) == (6, 1)
    assert not desc.schedule.state.paused

    await schedules.upsert(temporal_client, cfg, ["weekly"], "0 7 * * *", paused=True)
    desc = await temporal_client.get_schedule_handle(sched).describe()
    (cal,) = desc.schedule.spec.calendars
    assert cal.hour[0].start == 7
    assert desc.schedule.state.paused

    await schedules.delete(temporal_client, cfg, ["weekly"])
    with pytest.raises(RPCError) as err:
        await temporal_client.get_schedule_handle(sched).describe()
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_bad_cron_is_refused_by_temporal(
    temporal_client: Client, task_queue: str, agent: str
) -> None:
    cfg = config(agent, task_queue)
    with pytest.raises(RPCError):
        await schedules.upsert(temporal_client, cfg, ["t"], "99 * * * *", paused=False)


async def test_a_budget_stopped_run_counts_its_spend(harness: HarnessFactory, agent: str) -> None:
    """A run that fails on its budget has no result, yet its cost reaches the status."""
    price = pricing.lookup("claude-sonnet-4-6")
    # Room for the query call's reservation, not for the report's.
    limit = budget.reserve_usd(1000, budget.estimate_tokens(QUERY_PROMPT_CHARS), price) * 1.05
    topic = f"budget squeeze {agent}"
    overrides = {"budget": {"maxUSDPerRun": limit, "pauseTimeout": "0s"}}
    async with harness(overrides, start_worker=False) as h:
        async with h.worker():
            handle = await h.start(topic)
            with pytest.raises(WorkflowFailureError):
                await handle.result()
        # No worker polls now: nothing can answer a status query for the closed run.
        cache = workflows.RunCache()
        (seen,) = await eventually(
            lambda: workflows.observe(h.client, h.config, [topic], cache, query_running=True),
            lambda rs: len(rs) == 1 and not rs[0].running,
        )
        assert seen.phase == "BudgetExhausted"
        assert 0 < seen.cost_usd <= limit
        assert seen.llm_calls == 1
        assert seen.input_tokens > 0
        assert seen.output_tokens > 0
        now = datetime.now(UTC)
        assert status.cost_today([seen], now) == seen.cost_usd

        # `steadfast status` / `dev` describe the same run with the same spend.
        row = await starter.describe_run(h.client, handle.id, topic)
        assert (row.phase, row.cost_usd, row.llm_calls) == (
            "BudgetExhausted",
            seen.cost_usd,
            1,
        )
        assert "would exceed" in row.message


async def test_an_unreachable_temporal_holds_up_only_its_own_agents(
    temporal_address: str,
) -> None:
    # A listener that completes the TCP handshake but never speaks: Client.connect
    # hangs on it until the pool's connect timeout. No Secret is read for targets
    # without credentials, so the Kube client points nowhere and is never called.
    silent = socket.create_server(("127.0.0.1", 0))
    pool = TemporalPool(Kube(k8s.Configuration(host="http://127.0.0.1:1")), 10.0)
    try:
        unreachable = f"127.0.0.1:{silent.getsockname()[1]}"
        stuck = asyncio.create_task(
            pool.client("it", parse_spec("it", "a", {"topics": ["x"]}), unreachable)
        )
        await asyncio.sleep(0.5)  # let it take its target's lock and start connecting
        client = await pool.client("it", parse_spec("it", "b", {"topics": ["y"]}), temporal_address)
        # With one lock for the whole pool the second agent would have waited for the
        # first connect to time out, and `stuck` would be done by now.
        assert not stuck.done()
        assert await client.service_client.check_health()
        assert pool.connected == 1
        with pytest.raises(TimeoutError):
            await stuck
        assert pool.connected == 1  # a failed connect is not cached
    finally:
        silent.close()
        await pool.kube.close()


async def test_a_terminated_run_counts_the_spend_in_its_memo(
    harness: HarnessFactory, agent: str
) -> None:
    """Terminated from outside, a run has no result and no final status; its memo counts."""
    topic = f"terminated {agent}"
    async with harness({"notify": {"requireApproval": True}}, start_worker=False) as h:
        async with h.worker():
            handle = await h.start(topic)
            before = await chaos.wait_for_phase(
                h.client, handle.id, models.Phase.AWAITING_APPROVAL.value
            )
            assert before.cost_usd > 0
            assert before.llm_calls == 2  # the queries and the report
            # Running, with no worker asked: the memo already carries the spend.
            cache = workflows.RunCache()
            (running,) = await workflows.observe(
                h.client, h.config, [topic], cache, query_running=False
            )
            assert (running.phase, running.cost_usd) == ("Running", before.cost_usd)
            await handle.terminate("stopped by an operator")
        # No worker now, so nothing can replay the run to answer a query either.
        (seen,) = await eventually(
            lambda: workflows.observe(h.client, h.config, [topic], cache, query_running=True),
            lambda rs: len(rs) == 1 and not rs[0].running,
        )
        assert seen.phase == "Terminated"
        assert (seen.cost_usd, seen.llm_calls) == (before.cost_usd, before.llm_calls)
        assert (seen.input_tokens, seen.output_tokens) == (
            before.input_tokens,
            before.output_tokens,
        )
        assert status.cost_today([seen], datetime.now(UTC)) == before.cost_usd

        row = await starter.describe_run(h.client, handle.id, topic)
        assert (row.phase, row.cost_usd, row.llm_calls) == ("Terminated", before.cost_usd, 2)

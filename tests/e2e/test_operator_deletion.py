"""Deleting an agent waits for Temporal, and finds the agent's Schedules in Temporal.

An agent's finalizer stays while its Temporal is unreachable, for longer than the
minute of retries an earlier operator gave before it let the agent go with its
Schedules firing and its runs uncancelled; the status says what it waits for, and
``deletionPolicy: Abandon`` lets it go without waiting. Schedules are listed from
Temporal, so one whose topic the status no longer lists is deleted too, on an
edit and on deletion, while a sibling agent's (``<name>-eu``) is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError, RPCStatusCode
from tests.e2e.operator_env import (
    Scene,
    agent_manifest,
    apply,
    condition,
    get,
    secret,
    worker_process,
)
from tests.support.kube import KubeCluster
from tests.support.ports import free_port
from tests.support.sim import running_sim
from tests.support.tcpforward import TCPForwarder
from tests.support.waiting import wait_for

from steadfast_contract import ids, models, starter

pytestmark = [pytest.mark.e2e, pytest.mark.hostile]

CRON = "0 6 * * 1"
FINALIZER = "steadfast.dev/finalizer"
OUTAGE = 100.0
"""Seconds Temporal stays away: past the ~60 s after which the old handler gave up."""


def schedule_id(namespace: str, agent: str, topic: str) -> str:
    return f"{ids.workflow_id(namespace, agent, topic)}-schedule"


async def schedule_exists(client: Client, sched_id: str) -> bool:
    try:
        await client.get_schedule_handle(sched_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def eventually(what: str, check: Any, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)


async def stray_schedule(client: Client, namespace: str, agent: str, topic: str) -> str:
    """A paused Schedule as the operator makes them, for a topic no status lists."""
    wf_id = ids.workflow_id(namespace, agent, topic)
    await client.create_schedule(
        f"{wf_id}-schedule",
        Schedule(
            action=ScheduleActionStartWorkflow(
                models.WORKFLOW_NAME,
                models.ResearchInput(topic=topic, agent=agent, namespace=namespace),
                id=wf_id,
                task_queue=ids.default_task_queue(namespace, agent),
            ),
            spec=ScheduleSpec(cron_expressions=[CRON]),
            state=ScheduleState(paused=True),
        ),
    )
    return f"{wf_id}-schedule"


def runs_listed(cluster: KubeCluster, namespace: str, name: str) -> int:
    agent = get(cluster, "ra", namespace, name) or {}
    return len((agent.get("status") or {}).get("runs") or [])


async def scheduled_runs(client: Client, namespace: str, agent: str, topic: str) -> list[str]:
    """The ids of the runs a topic's Schedule started: with ``spec.schedule``, its first
    run too (<workflow id>-<time>)."""
    wf_id = ids.workflow_id(namespace, agent, topic)
    query = f"TemporalScheduledById = '{ids.schedule_id(wf_id)}'"
    return [wf.id async for wf in client.list_workflows(query)]


async def test_deletion_waits_for_an_unreachable_temporal_and_finishes_when_it_is_back(
    scene: Scene, temporal_client: Client, temporal_address: str
) -> None:
    with TCPForwarder(temporal_address) as fwd:
        temporal = {"address": fwd.address, "namespace": "default"}
        topics = {"blocked": ["held one", "held two"], "abandoned": ["let go"]}
        for name, its_topics in topics.items():
            policy = {"deletionPolicy": "Cancel"}
            apply(
                scene.cluster,
                agent_manifest(
                    name,
                    scene.namespace,
                    scene.sim,
                    its_topics,
                    temporal=temporal,
                    schedule=CRON,
                    **policy,
                ),
            )
        for name, its_topics in topics.items():
            wait_for(
                f"{name}'s runs in status",
                lambda n=name, t=its_topics: (
                    runs_listed(scene.cluster, scene.namespace, n) == len(t)
                ),
            )
            for topic in its_topics:
                assert await schedule_exists(
                    temporal_client, schedule_id(scene.namespace, name, topic)
                )

        fwd.cut()
        cut_at = time.monotonic()
        for name in topics:
            scene.cluster.kubectl("delete", "ra", name, "-n", scene.namespace, "--wait=false")
        # Longer than the old handler's retries: every poll must still find the agents.
        while time.monotonic() - cut_at < OUTAGE:
            for name in topics:
                agent = get(scene.cluster, "ra", scene.namespace, name)
                gone_after = time.monotonic() - cut_at
                assert agent is not None, f"{name} let go {gone_after:.0f}s into the outage"
                assert FINALIZER in agent["metadata"].get("finalizers", [])
            await asyncio.sleep(2)
        for name in topics:
            ready = condition(get(scene.cluster, "ra", scene.namespace, name), "Ready")
            assert (ready.get("status"), ready.get("reason")) == ("False", "WaitingForTemporal")
            assert fwd.address in ready["message"], ready["message"]
            assert "deletionPolicy: Abandon" in ready["message"], ready["message"]

        # The documented way out while Temporal is gone: Abandon lets the agent go.
        patch = json.dumps({"spec": {"deletionPolicy": "Abandon"}})
        scene.cluster.kubectl(
            "patch", "ra", "abandoned", "-n", scene.namespace, "--type=merge", "-p", patch
        )
        wait_for(
            "the abandoned agent gone",
            lambda: get(scene.cluster, "ra", scene.namespace, "abandoned") is None,
            timeout=90,
        )
        assert get(scene.cluster, "ra", scene.namespace, "blocked") is not None

        fwd.restore()
        wait_for(
            "the blocked agent gone once Temporal is back",
            lambda: get(scene.cluster, "ra", scene.namespace, "blocked") is None,
            timeout=120,
        )
    for topic in topics["blocked"]:
        assert not await schedule_exists(
            temporal_client, schedule_id(scene.namespace, "blocked", topic)
        )
        # The topic's first run was its Schedule's (<workflow id>-<time>).
        (run,) = await scheduled_runs(temporal_client, scene.namespace, "blocked", topic)
        handle = temporal_client.get_workflow_handle(run)
        events = [e.event_type async for e in handle.fetch_history_events()]
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in events
    # Abandoned while Temporal was away: its run is left running, its Schedule left.
    (left,) = topics["abandoned"]
    (run,) = await scheduled_runs(temporal_client, scene.namespace, "abandoned", left)
    handle = temporal_client.get_workflow_handle(run)
    events = [e.event_type async for e in handle.fetch_history_events()]
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED not in events
    left_schedule = schedule_id(scene.namespace, "abandoned", left)
    assert await schedule_exists(temporal_client, left_schedule)
    await temporal_client.get_schedule_handle(left_schedule).delete()
    await handle.terminate("test cleanup")


async def test_a_schedule_no_status_lists_is_deleted_on_edit_and_on_deletion(
    scene: Scene, temporal_client: Client
) -> None:
    apply(
        scene.cluster, agent_manifest("keeper", scene.namespace, scene.sim, ["kept"], schedule=CRON)
    )
    kept = schedule_id(scene.namespace, "keeper", "kept")
    await eventually("the kept topic's Schedule", lambda: schedule_exists(temporal_client, kept))
    # Removed long ago (beyond the runs the status lists), and a sibling agent's whose
    # id starts with this agent's prefix: only the first is the agent's.
    removed = await stray_schedule(temporal_client, scene.namespace, "keeper", "dropped long ago")
    sibling = await stray_schedule(temporal_client, scene.namespace, "keeper-eu", "not yours")

    body = agent_manifest("keeper", scene.namespace, scene.sim, ["kept", "added"], schedule=CRON)
    apply(scene.cluster, body)
    added = schedule_id(scene.namespace, "keeper", "added")
    await eventually("the added topic's Schedule", lambda: schedule_exists(temporal_client, added))

    async def removed_gone() -> bool:
        return not await schedule_exists(temporal_client, removed)

    await eventually("the removed topic's Schedule deleted on the edit", removed_gone, 30)
    assert await schedule_exists(temporal_client, kept)

    removed = await stray_schedule(temporal_client, scene.namespace, "keeper", "dropped later")
    scene.cluster.kubectl("delete", "ra", "keeper", "-n", scene.namespace, "--timeout=60s")
    for sched in (kept, added, removed):
        assert not await schedule_exists(temporal_client, sched), sched
    assert await schedule_exists(temporal_client, sibling)
    await temporal_client.get_schedule_handle(sibling).delete()


async def test_a_cancelled_run_saving_its_paid_report_keeps_the_agent_and_its_workers(
    scene: Scene, temporal_client: Client, tmp_path: Path
) -> None:
    """A run whose report is paid for waits in ``Saving`` for its report store, and a
    cancel does not stop that save. The finalizer used to return once cancellation was
    requested: the agent went, the garbage collector took its worker Deployment, and
    the run was left in ``Saving`` with no worker to save its report (the audit). Now
    the deletion waits for such runs, and says so; ``Abandon`` is the way out."""
    ns = scene.namespace
    # A report store that is down: nothing listens on this loopback port.
    secret(scene.cluster, ns, "down-db", {"dsn": f"postgresql://u:p@127.0.0.1:{free_port()}/db"})
    topic = "a report saved after its agent was deleted"
    wf_id = ids.workflow_id(ns, "saver", topic)
    handle = temporal_client.get_workflow_handle(wf_id)
    with running_sim() as sim:
        storage = {"postgresSecretRef": {"name": "down-db", "key": "dsn"}}
        apply(scene.cluster, agent_manifest("saver", ns, sim, [topic], storage=storage))
        try:
            with worker_process(scene.cluster, ns, "saver", tmp_path, sim):

                async def saving() -> bool:
                    try:
                        st = await starter.query_status(temporal_client, wf_id, rpc_timeout=3.0)
                    except Exception:
                        return False
                    return st.phase == models.Phase.SAVING and st.llm_calls >= 2

                await eventually("the run paid for its report and saving it", saving, 120)
                scene.cluster.kubectl("delete", "ra", "saver", "-n", ns, "--wait=false")

                def waiting() -> dict[str, Any] | None:
                    ready = condition(get(scene.cluster, "ra", ns, "saver"), "Ready")
                    return ready if ready.get("reason") == "WaitingForReports" else None

                ready = wait_for("the deletion to say it waits for the save", waiting)
                assert wf_id in ready["message"], ready["message"]
                assert "deletionPolicy: Abandon" in ready["message"], ready["message"]
                await asyncio.sleep(15)  # past a few of the finalizer's looks
                agent = get(scene.cluster, "ra", ns, "saver")
                assert agent is not None
                assert FINALIZER in agent["metadata"]["finalizers"]
                assert get(scene.cluster, "deploy", ns, "saver-worker") is not None
                events = [e.event_type async for e in handle.fetch_history_events()]
                assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in events
                assert await saving()  # the cancel did not stop the save

                # The way out the status names: the agent goes, the run is left.
                patch = json.dumps({"spec": {"deletionPolicy": "Abandon"}})
                scene.cluster.kubectl("patch", "ra", "saver", "-n", ns, "--type=merge", "-p", patch)
                wait_for(
                    "the agent gone once Abandon is set",
                    lambda: get(scene.cluster, "ra", ns, "saver") is None,
                    timeout=90,
                )
        finally:
            with contextlib.suppress(RPCError):
                await handle.terminate("test cleanup")

"""The retention sweep finds a chain whose first run history retention removed.

A deep run's transcript is keyed by its chain's first run. A chain that continued as
new loses that run to the namespace's history retention first (it closed when it
continued), and once a re-run of the topic had started a newer chain under the id,
the sweep looked the old chain up by its first run only: NOT_FOUND, taken for another
namespace's chain, its transcript kept for ever. Here the real dev server stands in
for retention: ``DeleteWorkflowExecution`` on a first run removes that run alone (its
transfer queue acks every second, so the removal lands at once). The sweep must then
find the chain by the run that ended it, and still keep another namespace's chain
under the same id, another agent's, and a chain still open whose first run is gone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from tests.integration.conftest import Harness, HarnessFactory
from tests.integration.test_deep_agent import chain_run_ids, deep, plan
from tests.support.temporal import start_dev_server

from steadfast_worker import retention, transcript
from steadfast_worker.activities.storage import ReportStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NOW = timedelta(0)


@pytest.fixture(scope="module")
async def temporal_client() -> AsyncIterator[Client]:
    """A dev server whose transfer queue acks every second (30 s by default), so a
    deleted run is gone within a second, as in Temporal's own deletion tests."""
    env = await start_dev_server(
        dynamic_config={"history.transferProcessorUpdateAckInterval": '"1s"'}
    )
    try:
        yield env.client
    finally:
        await env.shutdown()


async def _written(store: ReportStore, conversation: str) -> bool:
    for _ in range(300):
        if await store.get_parts(conversation, 100):
            return True
        await asyncio.sleep(0.05)
    return False


async def _continued(h: Harness, handle: WorkflowHandle[Any, Any]) -> str:
    """The chain's conversation key, once its first run has continued as new."""
    first = handle.first_execution_run_id or ""
    for _ in range(600):
        desc = await h.client.get_workflow_handle(handle.id).describe()
        if desc.run_id != first:
            assert desc.raw_description.workflow_execution_info.first_run_id == first
            return f"{handle.id}/{first}"
        await asyncio.sleep(0.05)
    raise AssertionError("the run never continued as new")


async def _remove_first_run(h: Harness, workflow_id: str, first: str) -> None:
    """What history retention does to a chain's first run, and to nothing else."""
    before = await chain_run_ids(h, workflow_id)
    await h.client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=h.client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=first),
        )
    )
    status = None
    for _ in range(300):
        try:
            await h.client.get_workflow_handle(workflow_id, run_id=first).describe()
        except RPCError as err:
            status = err.status
            break
        await asyncio.sleep(0.1)
    assert status == RPCStatusCode.NOT_FOUND, "the first run was never removed"
    after = await chain_run_ids(h, workflow_id)
    # That run alone: every other run of the id is still there (an open chain adds more).
    assert first not in after, after
    assert set(before) - {first} <= set(after), (before, after)
    for run in after:
        await h.client.get_workflow_handle(workflow_id, run_id=run).describe()


async def test_a_chain_whose_first_run_is_gone_is_swept_after_a_re_run(
    harness: HarnessFactory,
) -> None:
    async with harness(deep(20, continueAsNewAfterTurns=2)) as h:
        h.sim.set_faults(plan(20, latency_ms=150))
        store = await h.store()
        try:
            topic = f"re-run after retention {uuid.uuid4().hex[:6]}"
            old = await h.start(topic)
            alone = await h.start(f"never re-run {uuid.uuid4().hex[:6]}")
            old_key, alone_key = await _continued(h, old), await _continued(h, alone)
            assert await _written(store, old_key)
            assert await _written(store, alone_key)
            for chain in (old, alone):
                await h.client.get_workflow_handle(
                    chain.id, first_execution_run_id=chain.first_execution_run_id
                ).terminate("the test ends it without a report")
                await _remove_first_run(h, chain.id, chain.first_execution_run_id or "")

            # The topic runs again: a new chain under the id, open, its first run also
            # removed (it continued as new), the chain still running.
            rerun = await h.start(topic)
            assert rerun.first_execution_run_id != old.first_execution_run_id
            rerun_key = await _continued(h, rerun)
            assert await _written(store, rerun_key)
            await _remove_first_run(h, rerun.id, rerun.first_execution_run_id or "")
            newest = await h.client.get_workflow_handle(rerun.id).describe()
            assert newest.status == WorkflowExecutionStatus.RUNNING

            # Another namespace's chain of the same topic (the id does not name the
            # namespace): a first run this namespace never had.
            elsewhere = f"{old.id}/{uuid.uuid4()}"
            await store.put_part(elsewhere, 1, transcript.ASSISTANT, "{}")

            # Another agent's workers judge none of them.
            assert (
                await retention.sweep(h.client, store, idle=NOW, keep=NOW, task_queue="other") == 0
            )
            gone = await retention.sweep(
                h.client, store, idle=NOW, keep=NOW, task_queue=h.task_queue
            )
            left = {
                key: len(await store.get_parts(key, 100))
                for key in (old_key, alone_key, rerun_key, elsewhere)
            }
            print("transcript parts left after the sweep:", left, "deleted:", gone)
            # A chain still the newest under its id is named by its newest run.
            assert left[alone_key] == 0
            # A chain a re-run followed, its first run gone: found by the run that ended it.
            assert left[old_key] == 0, "the chain whose first run is gone was kept"
            assert left[rerun_key] > 0  # open: kept, first run gone or not
            assert left[elsewhere] == 1  # not this namespace's: kept
            assert gone == 2
        finally:
            await store.close()

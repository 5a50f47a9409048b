"""Starting a topic against the real dev server: one RPC when new, idempotent always.

``starter.start_topic`` used to describe the workflow id before every start, to tell
a new start from a found one: a second RPC on every run's start, for the server
to serve. The start alone now says it: the server refuses a running id (and a
finished one the reuse policy keeps) and names the run it found. No worker polls
these task queues, so the runs stay running.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.client import (
    Client,
    DescribeWorkflowInput,
    Interceptor,
    OutboundInterceptor,
    WorkflowExecutionDescription,
)

from steadfast_contract import ids, starter
from steadfast_contract.config import WorkerConfig, parse_config

pytestmark = pytest.mark.integration


class _CountDescribes(Interceptor):
    def __init__(self) -> None:
        self.describes = 0

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        counter = self

        class _Outbound(OutboundInterceptor):
            async def describe_workflow(
                self, input: DescribeWorkflowInput
            ) -> WorkflowExecutionDescription:
                counter.describes += 1
                return await super().describe_workflow(input)

        return _Outbound(next)


def _counted(client: Client) -> tuple[Client, _CountDescribes]:
    counter = _CountDescribes()
    config: dict[str, Any] = dict(client.config())
    config["interceptors"] = [counter]
    return Client(**config), counter


def _config(task_queue: str) -> WorkerConfig:
    return parse_config(
        {
            "agent": f"a{uuid.uuid4().hex[:8]}",
            "namespace": "it",
            "temporal": {"taskQueue": task_queue},
            "search": {"endpoint": "http://127.0.0.1:1/search"},
        }
    )


async def test_a_new_start_makes_no_describe_and_a_second_finds_its_run(
    temporal_client: Client, task_queue: str
) -> None:
    client, counter = _counted(temporal_client)
    cfg = _config(task_queue)
    first = await starter.start_topic(client, cfg, "one rpc")
    assert counter.describes == 0
    assert not first.existing
    assert first.workflow_id == ids.workflow_id(cfg.namespace, cfg.agent, "one rpc")
    desc = await client.get_workflow_handle(first.workflow_id).describe()
    assert first.run_id == desc.run_id

    for rerun in (False, True):  # a running topic is never started twice, re-run or not
        again = await starter.start_topic(client, cfg, "one rpc", rerun=rerun)
        assert again.existing
        assert again.run_id == first.run_id


async def test_concurrent_starts_of_one_topic_make_one_run(
    temporal_client: Client, task_queue: str
) -> None:
    cfg = _config(task_queue)
    starts = await asyncio.gather(
        *(starter.start_topic(temporal_client, cfg, "raced") for _ in range(5))
    )
    assert sum(not s.existing for s in starts) == 1
    assert len({s.run_id for s in starts}) == 1
    runs = [
        wf async for wf in temporal_client.list_workflows(f"WorkflowId = '{starts[0].workflow_id}'")
    ]
    assert len(runs) == 1

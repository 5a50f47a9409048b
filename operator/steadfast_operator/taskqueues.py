"""Task-queue statistics from Temporal, shared by every agent on the same queue.

The autoscaler and the status need, per task queue, the approximate backlog
(count and age), add and dispatch rates and pollers. ``DescribeTaskQueue``
with ``report_stats`` answers that for one task-queue type, so a queue costs
two calls (workflow and activity types).

Bounded calls as agents grow: :class:`QueueStats` keeps one entry per
``(Temporal address, namespace, task queue)``. A request within ``max_age`` of
the last answer is served from the cache, and concurrent requests for the same
queue share one in-flight describe. So N agents on one queue cost two calls
per interval, and M queues cost 2·M per interval whatever the number of agents.
(The server itself caches these statistics for about 5 s; the tests' dev
server turns that off.)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from steadfast_operator import metrics
from steadfast_operator.status import QueueInfo


async def describe(client: Client, task_queue: str) -> QueueInfo:
    """Workflow and activity statistics of one queue, summed; pollers de-duplicated."""
    backlog = 0
    age = 0.0
    add = dispatch = 0.0
    pollers: set[str] = set()
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=kind,
                report_stats=True,
            )
        )
        stats = resp.stats
        backlog += int(stats.approximate_backlog_count)
        age = max(age, stats.approximate_backlog_age.ToTimedelta().total_seconds())
        add += float(stats.tasks_add_rate)
        dispatch += float(stats.tasks_dispatch_rate)
        pollers.update(p.identity for p in resp.pollers)
    return QueueInfo(
        name=task_queue,
        backlog=backlog,
        backlog_age_seconds=age,
        pollers=len(pollers),
        add_rate=add,
        dispatch_rate=dispatch,
    )


@dataclass
class _Entry:
    at: float
    info: QueueInfo


@dataclass
class QueueStats:
    """A per-queue cache with single-flight refresh, shared by all agents."""

    max_age: float = 2.0
    """Seconds an answer is reused; below the status interval, above a burst of ticks."""
    _entries: dict[tuple[str, str, str], _Entry] = field(default_factory=dict)
    _inflight: dict[tuple[str, str, str], asyncio.Future[QueueInfo]] = field(default_factory=dict)
    calls: int = 0
    """Describe round-trips made (two Temporal calls each); for tests and benchmarks."""

    async def get(self, client: Client, task_queue: str, *, fresh: bool = False) -> QueueInfo:
        key = (client.service_client.config.target_host, client.namespace, task_queue)
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and not fresh and now - entry.at <= self.max_age:
            return entry.info
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # The caller that was asking was cancelled (its agent deleted, say),
                # not this one: ask again rather than hand its cancel on.
                return await self.get(client, task_queue, fresh=fresh)
        future: asyncio.Future[QueueInfo] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            self.calls += 1
            metrics.TEMPORAL_DESCRIBES.inc()
            info = await describe(client, task_queue)
        except BaseException as err:
            future.set_exception(err)
            # Retrieve it so an unawaited failure is not logged as never retrieved.
            future.exception()
            raise
        else:
            future.set_result(info)
            self._entries[key] = _Entry(time.monotonic(), info)
            return info
        finally:
            self._inflight.pop(key, None)

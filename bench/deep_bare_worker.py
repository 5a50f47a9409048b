"""Worker process for :mod:`deep_bare`: ``python bench/deep_bare_worker.py ADDRESS TASK_QUEUE``.

The simulator's address and API key come from ``BARE_SIM_URL`` and
``BARE_SIM_API_KEY``. A separate module from the workflow's, because the
workflow sandbox re-imports a workflow's module by name and ``__main__`` cannot
be re-imported. Concurrency limits are Steadfast's defaults, so one worker of
each kind has the same room.
"""

from __future__ import annotations

import asyncio
import os
import sys

from temporalio.client import Client
from temporalio.worker import Worker

from deep_bare import BareActivities, BareDeepWorkflow
from steadfast_contract.config import WorkerTuning


async def serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    tuning = WorkerTuning()
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BareDeepWorkflow],
        activities=BareActivities().all(),
        max_concurrent_activities=tuning.max_concurrent_activities,
        max_concurrent_workflow_tasks=tuning.max_concurrent_workflow_tasks,
    ):
        print("bare deep worker polling", task_queue, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(serve(sys.argv[1], sys.argv[2]))
    finally:
        os._exit(0)

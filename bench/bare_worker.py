"""Worker process for :mod:`bare`: ``python bench/bare_worker.py ADDRESS TASK_QUEUE``.

A separate module from the workflow's, because the workflow sandbox re-imports a
workflow's module by name and ``__main__`` cannot be re-imported.
"""

from __future__ import annotations

import asyncio
import os
import sys

from temporalio.client import Client
from temporalio.worker import Worker

from bare import BareWorkflow, noop


async def serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BareWorkflow],
        activities=[noop],
        max_concurrent_activities=20,
        max_concurrent_workflow_tasks=20,
    ):
        print("bare worker polling", task_queue, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(serve(sys.argv[1], sys.argv[2]))
    finally:
        os._exit(0)

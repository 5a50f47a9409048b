"""Worker process for :mod:`handwritten`: ``python bench/handwritten_worker.py ADDRESS QUEUE``.

Configured from the environment (``HAND_LLM_URL``, ``HAND_LLM_KEY``,
``HAND_SEARCH_URL``, ``HAND_DB``), with the SDK's defaults otherwise, as a
sample's worker is. A module of its own because the workflow sandbox re-imports
a workflow's module by name and ``__main__`` cannot be re-imported.
"""

from __future__ import annotations

import asyncio
import os
import sys

from temporalio.client import Client
from temporalio.worker import Worker

from handwritten import (
    HandWrittenResearch,
    generate_queries,
    save_report,
    search,
    write_report,
)


async def serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[HandWrittenResearch],
        activities=[generate_queries, search, write_report, save_report],
    ):
        print("hand-written worker polling", task_queue, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(serve(sys.argv[1], sys.argv[2]))
    finally:
        os._exit(0)

"""The baseline of the orchestration-overhead benchmark: a bare Temporal workflow.

It runs waves of no-op activities, each wave's activities concurrently and the
waves one after another -- the same shape as a Steadfast run (queries, then the
searches together, then report, save, email) -- with nothing of Steadfast's (no
budget, no status, no stream, no LLM client), so the difference between a
Steadfast run and this one on the same server is what Steadfast adds per step.
Its worker is ``bench/bare_worker.py``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

WORKFLOW_NAME = "BareWorkflow"


@activity.defn(name="noop")
async def noop(step: int) -> int:
    return step


@workflow.defn(name=WORKFLOW_NAME)
class BareWorkflow:
    @workflow.run
    async def run(self, waves: list[int]) -> int:
        done = 0
        for wave, size in enumerate(waves):
            results = await asyncio.gather(
                *(
                    workflow.execute_activity(
                        noop, wave, start_to_close_timeout=timedelta(seconds=30)
                    )
                    for _ in range(size)
                )
            )
            done += len(results)
        return done

"""The baseline of the orchestration-overhead benchmark: a bare Temporal workflow.

It runs ``steps`` no-op activities one after another, with nothing of Steadfast's
(no budget, no status, no stream, no LLM client), so the difference between a
Steadfast run and this one on the same server is what Steadfast adds per step.
Its worker is ``bench/bare_worker.py``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

WORKFLOW_NAME = "BareWorkflow"


@activity.defn(name="noop")
async def noop(step: int) -> int:
    return step


@workflow.defn(name=WORKFLOW_NAME)
class BareWorkflow:
    @workflow.run
    async def run(self, steps: int) -> int:
        done = 0
        for step in range(steps):
            done += 1 + await workflow.execute_activity(
                noop, step, start_to_close_timeout=timedelta(seconds=30)
            )
        return done

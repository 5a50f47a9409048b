"""Orchestration overhead: what Steadfast's workflow costs per step over bare Temporal.

Same dev server, same script: a Steadfast run against a zero-latency simulator
(so the LLM and search "work" is close to nothing) is compared with a bare
workflow (``bench/bare.py``) that runs the same number of no-op activities. Both
workers are separate processes. The figure is the per-step ratio of median
server-side run durations; the target is at most 1.2x.

``python bench/orchestration_overhead.py [--runs N]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import uuid
from pathlib import Path

from temporalio.api.enums.v1 import EventType

import benchlib
from bare import WORKFLOW_NAME as BARE
from steadfast_worker import embedded, runs

TARGET = 1.2
HERE = Path(__file__).resolve().parent


async def activity_steps(s: embedded.Stack, workflow_id: str) -> int:
    """Activities a Steadfast run scheduled: the bare workflow runs as many."""
    history = await s.client.get_workflow_handle(workflow_id).fetch_history()
    return sum(
        1 for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    )


async def main(n: int) -> int:
    async with benchlib.stack() as s:
        cfg = benchlib.bench_config(s)
        s.start_worker(cfg)
        bare_queue = f"bare-{uuid.uuid4().hex[:8]}"
        s.supervisor.spawn(
            "bare-worker",
            [sys.executable, str(HERE / "bare_worker.py"), s.address, bare_queue],
        )
        await benchlib.wait_polling(s.client, cfg.task_queue)
        await benchlib.wait_polling(s.client, bare_queue)

        async def steadfast_run(i: int) -> tuple[float, int]:
            started = await runs.start_topic(s.client, cfg, f"overhead topic {i} {uuid.uuid4()}")
            handle = s.client.get_workflow_handle(started.workflow_id)
            await handle.result()
            return await benchlib.server_seconds(handle), await activity_steps(
                s, started.workflow_id
            )

        async def bare_run(steps: int) -> float:
            handle = await s.client.start_workflow(
                BARE, steps, id=f"bare-{uuid.uuid4()}", task_queue=bare_queue
            )
            await handle.result()
            return await benchlib.server_seconds(handle)

        # Warm both workers (imports, sandbox, connections) before measuring.
        _, steps = await steadfast_run(-1)
        await bare_run(steps)
        sf: list[float] = []
        bare: list[float] = []
        for i in range(n):
            seconds, steps_i = await steadfast_run(i)
            sf.append(seconds / steps_i)
            bare.append(await bare_run(steps_i) / steps_i)
        ratio = statistics.median(sf) / statistics.median(bare)
        print(f"orchestration overhead: {steps} activity steps per run, {n} runs each")
        print(f"  steadfast per step: {benchlib.summary(sf)}")
        print(f"  bare      per step: {benchlib.summary(bare)}")
        verdict = "within" if ratio <= TARGET else "ABOVE"
        print(f"  ratio (median per step): {ratio:.2f}x  ({verdict} the {TARGET}x target)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    code = asyncio.run(main(parser.parse_args().runs))
    sys.stdout.flush()
    os._exit(code)

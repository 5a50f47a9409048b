"""Orchestration overhead: what Steadfast's workflow costs per step over bare Temporal.

Same dev server, same script: a Steadfast run against a zero-latency simulator
(so the LLM and search "work" is close to nothing) is compared with a bare
workflow (``bench/bare.py``) that runs the same number of no-op activities. Both
workers are separate processes, and the bare workflow has the same shape
(waves of concurrent activities) as the Steadfast run. Two ratios are printed,
of median per-step server-side durations: end to end, and with the time spent
inside activities removed (the activities' own work -- HTTP to the simulator,
the SQLite write -- is not orchestration). The target, at most 1.2x, is on the
orchestration ratio.

``python bench/orchestration_overhead.py [--runs N]``
"""

from __future__ import annotations

import os
import statistics
import sys
import uuid
from datetime import UTC
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

import benchlib
from bare import WORKFLOW_NAME as BARE
from steadfast_contract import starter
from steadfast_dev import embedded

TARGET = 1.2
HERE = Path(__file__).resolve().parent


def _ts(e: HistoryEvent) -> float:
    return e.event_time.ToDatetime(tzinfo=UTC).timestamp()


async def work_seconds(s: embedded.Stack, workflow_id: str) -> float:
    """Time the run spent inside activities, counting each wave by its slowest activity.

    Subtracted from the run's duration it leaves the orchestration alone: the
    scheduling, dispatch and workflow-task time that this benchmark is about.
    """
    history = await s.client.get_workflow_handle(workflow_id).fetch_history()
    by_id = {e.event_id: e for e in history.events}
    waves: dict[int, float] = {}
    for e in history.events:
        if e.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            continue
        attrs = e.activity_task_completed_event_attributes
        scheduled = by_id[attrs.scheduled_event_id]
        task = scheduled.activity_task_scheduled_event_attributes.workflow_task_completed_event_id
        took = _ts(e) - _ts(by_id[attrs.started_event_id])
        waves[task] = max(waves.get(task, 0.0), took)
    return sum(waves.values())


async def activity_waves(s: embedded.Stack, workflow_id: str) -> list[int]:
    """The run's shape: how many activities each workflow task scheduled, in order.

    The bare workflow replays the same shape (the searches run together in both),
    so the comparison is step for step.
    """
    history = await s.client.get_workflow_handle(workflow_id).fetch_history()
    waves: dict[int, int] = {}
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            task = e.activity_task_scheduled_event_attributes.workflow_task_completed_event_id
            waves[task] = waves.get(task, 0) + 1
    return [waves[k] for k in sorted(waves)]


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

        async def steadfast_run(i: int) -> tuple[float, float, list[int]]:
            started = await starter.start_topic(s.client, cfg, f"overhead topic {i} {uuid.uuid4()}")
            handle = s.client.get_workflow_handle(started.workflow_id)
            await handle.result()
            seconds = await benchlib.server_seconds(handle)
            work = await work_seconds(s, handle.id)
            return seconds, work, await activity_waves(s, started.workflow_id)

        async def bare_run(waves: list[int]) -> tuple[float, float]:
            handle = await s.client.start_workflow(
                BARE, waves, id=f"bare-{uuid.uuid4()}", task_queue=bare_queue
            )
            await handle.result()
            return await benchlib.server_seconds(handle), await work_seconds(s, handle.id)

        # Warm both workers (imports, sandbox, connections) before measuring.
        _, _, waves = await steadfast_run(-1)
        await bare_run(waves)
        sf: list[float] = []
        bare: list[float] = []
        sf_orch: list[float] = []
        bare_orch: list[float] = []
        for i in range(n):
            seconds, work, waves_i = await steadfast_run(i)
            steps = sum(waves_i)
            sf.append(seconds / steps)
            sf_orch.append((seconds - work) / steps)
            b_seconds, b_work = await bare_run(waves_i)
            bare.append(b_seconds / steps)
            bare_orch.append((b_seconds - b_work) / steps)
        ratio = statistics.median(sf) / statistics.median(bare)
        orch_ratio = statistics.median(sf_orch) / statistics.median(bare_orch)
        print(
            f"orchestration overhead: {sum(waves)} activity steps per run in waves {waves}, "
            f"{n} runs each, load average {os.getloadavg()[0]:.1f}"
        )
        print(f"  steadfast per step: {benchlib.summary(sf)}")
        print(f"  bare      per step: {benchlib.summary(bare)}")
        print(f"  ratio (median per step, end to end): {ratio:.2f}x")
        print(
            f"  steadfast orchestration per step (activity time excluded): "
            f"{benchlib.summary(sf_orch)}"
        )
        print(
            f"  bare      orchestration per step (activity time excluded): "
            f"{benchlib.summary(bare_orch)}"
        )
        verdict = "within" if orch_ratio <= TARGET else "ABOVE"
        print(f"  orchestration ratio: {orch_ratio:.2f}x  ({verdict} the {TARGET}x target)")
    return 0


if __name__ == "__main__":
    benchlib.main_with_runs(main, 10, __doc__)

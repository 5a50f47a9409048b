"""Throughput of one worker: runs per second at 1 and at 20 concurrent runs, and its RSS.

One ``steadfast worker`` process (default settings) against a zero-latency
simulator on the embedded dev server. Idle RSS is measured after the worker has
started polling and before any run; peak RSS is sampled during the runs.

``python bench/throughput.py [--runs N]``
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import benchlib
from steadfast_contract import starter
from steadfast_contract.config import WorkerConfig
from steadfast_dev import embedded


async def batch(s: embedded.Stack, cfg: WorkerConfig, n: int, c: int) -> float:
    """Run ``n`` runs with at most ``c`` in flight; return runs per second."""
    gate = asyncio.Semaphore(c)
    tag = uuid.uuid4().hex[:6]

    async def one(i: int) -> None:
        async with gate:
            started = await starter.start_topic(s.client, cfg, f"throughput {tag} {i}")
            await s.client.get_workflow_handle(started.workflow_id).result()

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.monotonic() - t0)


async def main(n: int) -> int:
    async with benchlib.stack() as s:
        cfg = benchlib.bench_config(s)
        worker = s.start_worker(cfg)
        await benchlib.wait_polling(s.client, cfg.task_queue)
        await asyncio.sleep(3.0)
        idle = benchlib.tree_rss(worker)
        peak = idle
        stop = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, benchlib.tree_rss(worker))
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        await batch(s, cfg, 2, 1)  # warm-up
        others = {"dev server": s.server, "simulator": s.sim}
        cpu0 = benchlib.tree_cpu(worker)
        one = await batch(s, cfg, n, 1)
        cpu1 = benchlib.tree_cpu(worker)
        other1 = {k: benchlib.tree_cpu(c) for k, c in others.items() if c is not None}
        many = max(n * 3, 20)
        twenty = await batch(s, cfg, many, 20)
        cpu2 = benchlib.tree_cpu(worker)
        other2 = {k: benchlib.tree_cpu(c) for k, c in others.items() if c is not None}
        stop.set()
        await sampler
        print("throughput of one worker (zero-latency simulator, default settings)")
        print(f"  1 concurrent run:   {one:.2f} runs/s")
        print(f"  20 concurrent runs: {twenty:.2f} runs/s  ({twenty / one:.1f}x)")
        print(f"  worker RSS: idle {benchlib.mib(idle)}, peak {benchlib.mib(peak)}")
        print(
            f"  worker CPU per run: {(cpu1 - cpu0) / n * 1000:.0f} ms at 1, "
            f"{(cpu2 - cpu1) / many * 1000:.0f} ms at 20 (a ceiling of about "
            f"{many / max(cpu2 - cpu1, 1e-9):.1f} runs/s per busy core)"
        )
        for k in other2:
            print(f"  {k} CPU per run at 20: {(other2[k] - other1[k]) / many * 1000:.0f} ms")
        print(f"  machine load average during the run: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    benchlib.main_with_runs(main, 20, __doc__)

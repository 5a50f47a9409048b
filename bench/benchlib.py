"""What the benchmarks share: an embedded stack in a scratch directory, timing, RSS.

Each benchmark is a script (``python bench/<name>.py``) that starts its own
headless dev server, simulator and worker processes through the same
:class:`steadfast_dev.embedded.Stack` that ``steadfast dev`` uses, so the
figures describe the product as shipped, not a test double.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

import psutil
from temporalio.client import Client, WorkflowHandle

from steadfast_contract import agentfile
from steadfast_contract.config import WorkerConfig
from steadfast_dev import embedded
from steadfast_dev.processes import Child

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "market-watch.yaml"


#: The source trees the benchmarked processes import from the checkout.
SOURCES = ("contract", "worker", "dev", "cli", "bench")


def compile_bytecode() -> None:
    """Compile the checkout's modules, as the images do when they are built.

    Without bytecode (a machine may set ``PYTHONDONTWRITEBYTECODE``) every
    process compiles what it imports from source, and the workflow sandbox
    imports a workflow's module afresh for each run it creates: the figures would
    count a compiler the shipped worker never runs. Both sides of a comparison get
    the same treatment; ``__pycache__`` is ignored by git.
    """
    for name in SOURCES:
        compileall.compile_dir(ROOT / name, quiet=1, workers=0)


@asynccontextmanager
async def stack(sim_flags: Sequence[str] = ()) -> AsyncIterator[embedded.Stack]:
    """A headless embedded stack in a temporary state directory, over compiled sources."""
    compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="steadfast-bench-") as tmp:
        options = embedded.StackOptions(
            state_dir=Path(tmp),
            port=embedded.free_port(),
            ui_port=0,
            sim_flags=list(sim_flags),
        )
        async with embedded.Stack(options) as s:
            yield s


def bench_config(s: embedded.Stack, **worker: object) -> WorkerConfig:
    """The example agent on a fresh task queue, pointed at the stack."""
    cfg = agentfile.worker_config_from_agent(agentfile.load_manifest(EXAMPLE))
    temporal = cfg.temporal.model_copy(update={"task_queue": f"bench-{uuid.uuid4().hex[:8]}"})
    cfg = cfg.model_copy(update={"temporal": temporal})
    if worker:
        cfg = cfg.model_copy(update={"worker": cfg.worker.model_copy(update=worker)})
    return s.worker_config(cfg)


async def wait_polling(client: Client, task_queue: str, deadline_s: float = 60.0) -> None:
    """Until a worker polls ``task_queue`` (a throwaway workflow round-trip would skew runs)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        if resp.pollers:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no worker polled {task_queue} within {deadline_s}s")


async def server_seconds(handle: WorkflowHandle[object, object]) -> float:
    """Start-to-close time of a closed workflow, as the server recorded it."""
    desc = await handle.describe()
    if desc.close_time is None:
        raise RuntimeError(f"{handle.id} has not closed")
    return (desc.close_time - desc.start_time).total_seconds()


def _tree(child: Child) -> list[psutil.Process]:
    """A child process and its descendants (empty once it has gone)."""
    try:
        proc = psutil.Process(child.pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(child: Child) -> int:
    """Resident memory of a child process and its descendants, in bytes."""
    total = 0
    for p in _tree(child):
        with suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def tree_cpu(child: Child) -> float:
    """CPU seconds (user + system) used so far by a child process and its descendants."""
    total = 0.0
    for p in _tree(child):
        with suppress(psutil.NoSuchProcess):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def summary(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):.3f}s  p95 {p95:.3f}s  (n={len(ordered)})"


def run_and_exit(main: Coroutine[Any, Any, int]) -> NoReturn:
    """Run a benchmark's ``main`` and exit with its code, without waiting on leftover threads."""
    code = asyncio.run(main)
    sys.stdout.flush()
    os._exit(code)


def main_with_runs(
    main: Callable[[int], Coroutine[Any, Any, int]], default_runs: int, doc: str | None
) -> NoReturn:
    """The ``__main__`` of a benchmark whose only argument is ``--runs``."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--runs", type=int, default=default_runs)
    run_and_exit(main(parser.parse_args().runs))

"""What the deep-agent benchmarks share: a deep agent's configuration, the simulator's
agent plan, the hand-written loop's worker, and the figures read from histories.

Every figure comes from the server's own records: wall time from the first
event of a run's chain to the last, activity time from each activity's started
and completed events, sizes from ``HistoryEvent.ByteSize()`` of every run of a
continue-as-new chain.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import psutil
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

import benchlib
from deep_bare import CLIENTS_ENV, SIM_API_KEY_ENV, SIM_URL_ENV, BareDeepInput
from deep_bare import WORKFLOW_NAME as BARE
from steadfast_contract import starter
from steadfast_contract.config import WorkerConfig
from steadfast_dev import embedded
from steadfast_dev.processes import Child

HERE = Path(__file__).resolve().parent
#: Room for the whole report, as the integration tests give it (a cut one loses its sources).
MAX_TOKENS = 4000
LLM_ACTIVITIES = frozenset({"deep_turn", "bare_llm"})


@asynccontextmanager
async def stack(
    sim_flags: Sequence[str] = (), metrics: bool = False
) -> AsyncIterator[embedded.Stack]:
    """:func:`benchlib.stack`, optionally with each worker's metrics ports open."""
    if not metrics:
        async with benchlib.stack(sim_flags) as s:
            yield s
        return
    with tempfile.TemporaryDirectory(prefix="steadfast-bench-") as tmp:
        options = embedded.StackOptions(
            state_dir=Path(tmp),
            port=embedded.free_port(),
            ui_port=0,
            sim_flags=list(sim_flags),
            metrics=True,
        )
        async with embedded.Stack(options) as s:
            yield s


def deep_config(s: embedded.Stack, turns: int, **worker: object) -> WorkerConfig:
    """The example agent, ``research: {strategy: deep, maxTurns: turns}``, on a fresh queue."""
    cfg = benchlib.bench_config(s, **worker)
    research = cfg.research.model_copy(update={"strategy": "deep", "max_turns": turns})
    model = cfg.model.model_copy(update={"max_tokens": MAX_TOKENS})
    return cfg.model_copy(update={"research": research, "model": model})


def plan(turns: int, latency_ms: int = 0, **llm: object) -> dict[str, Any]:
    """The simulator plays a ``turns``-turn agent whose searches link to its own pages;
    ``latency_ms`` before every answer of the model, the search and the pages."""
    return {
        "llm": {"agent_turns": turns, "latency_ms": latency_ms, **llm},
        "search": {"page_links": True, "latency_ms": latency_ms},
        "pages": {"latency_ms": latency_ms},
    }


def start_bare_worker(s: embedded.Stack, clients: str = "async") -> tuple[Child, str]:
    """The hand-written loop's worker process on a fresh task queue; ``clients``
    ``sync`` makes its model and search calls block (:data:`deep_bare.CLIENTS_ENV`)."""
    queue = f"bare-deep-{clients}-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        SIM_URL_ENV: s.sim_url,
        SIM_API_KEY_ENV: embedded.SIM_API_KEY,
        CLIENTS_ENV: clients,
    }
    child = s.supervisor.spawn(
        f"bare-deep-worker-{queue}",
        [sys.executable, str(HERE / "deep_bare_worker.py"), s.address, queue],
        env=env,
    )
    return child, queue


async def run_steadfast(s: embedded.Stack, cfg: WorkerConfig, topic: str) -> str:
    """Start a Steadfast deep run as every starter does, wait for it; its workflow id."""
    started = await starter.start_topic(s.client, cfg, f"{topic} {uuid.uuid4().hex[:6]}")
    await s.client.get_workflow_handle(started.workflow_id).result()
    return started.workflow_id


async def run_bare(s: embedded.Stack, queue: str, topic: str, turns: int) -> str:
    """Run the hand-written loop to its end; its workflow id."""
    handle = await s.client.start_workflow(
        BARE,
        BareDeepInput(f"{topic} {uuid.uuid4().hex[:6]}", turns, max_tokens=MAX_TOKENS),
        id=f"bare-deep-{uuid.uuid4()}",
        task_queue=queue,
    )
    await handle.result()
    return handle.id


async def chain(client: Client, workflow_id: str) -> list[list[HistoryEvent]]:
    """The histories of every run of a workflow's continue-as-new chain, oldest first.

    Followed through each run's ``ContinuedAsNew`` event, so visibility lag cannot
    drop a run.
    """
    desc = await client.get_workflow_handle(workflow_id).describe()
    run_id: str | None = desc.raw_description.workflow_execution_info.first_run_id or None
    runs = []
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        runs.append(list(history.events))
        last = history.events[-1]
        run_id = None
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return runs


def _ts(e: HistoryEvent) -> float:
    return e.event_time.ToDatetime(tzinfo=UTC).timestamp()


@dataclass
class RunFigures:
    """One run (a whole chain), from its histories."""

    runs: int
    events: int
    bytes: int
    largest_run_bytes: int
    llm_calls: int
    activities: int
    wall_s: float
    activity_s: float
    """Time inside activities, each workflow task's batch counted by its slowest one."""
    busy_s: float
    """Time inside activities, each counted (what heartbeats are paid on)."""
    by_type: dict[str, list[float]]
    """Seconds of each completed activity, by activity type."""

    @property
    def orchestration_s(self) -> float:
        return self.wall_s - self.activity_s


def figures(histories: list[list[HistoryEvent]]) -> RunFigures:
    events = [e for run in histories for e in run]
    sizes = [sum(e.ByteSize() for e in run) for run in histories]
    llm_calls = activities = 0
    activity_s = busy_s = 0.0
    by_type: dict[str, list[float]] = {}
    for run in histories:
        by_id = {e.event_id: e for e in run}
        batches: dict[int, float] = {}
        for e in run:
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                activities += 1
                name = e.activity_task_scheduled_event_attributes.activity_type.name
                llm_calls += name in LLM_ACTIVITIES
            if e.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                continue
            attrs = e.activity_task_completed_event_attributes
            scheduled = by_id[attrs.scheduled_event_id].activity_task_scheduled_event_attributes
            task = scheduled.workflow_task_completed_event_id
            took = _ts(e) - _ts(by_id[attrs.started_event_id])
            batches[task] = max(batches.get(task, 0.0), took)
            busy_s += took
            by_type.setdefault(scheduled.activity_type.name, []).append(took)
        activity_s += sum(batches.values())
    return RunFigures(
        runs=len(histories),
        events=len(events),
        bytes=sum(sizes),
        largest_run_bytes=max(sizes),
        llm_calls=llm_calls,
        activities=activities,
        wall_s=_ts(events[-1]) - _ts(events[0]),
        activity_s=activity_s,
        busy_s=busy_s,
        by_type=by_type,
    )


async def run_figures(client: Client, workflow_id: str) -> RunFigures:
    return figures(await chain(client, workflow_id))


def vm_hwm(child: Child) -> int:
    """Peak resident memory (``VmHWM``) of a child process and its descendants, in bytes."""
    try:
        root = psutil.Process(child.pid)
        pids = [root.pid, *(p.pid for p in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total


async def sdk_requests(cfg: WorkerConfig, operation: str) -> float:
    """How many ``operation`` RPCs the worker's SDK has made (its ``temporal_request``
    counter, on the worker's SDK metrics port; the stack must have ``metrics=True``)."""
    port = cfg.worker.sdk_metrics_port
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://{cfg.worker.metrics_host}:{port}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in ("temporal_request", "temporal_request_total") and (
            f'operation="{operation}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total

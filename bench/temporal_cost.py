"""Temporal-side cost of a run: a hand-written run against a Steadfast pipeline run.

Same dev server, same simulator, one script run. The hand-written side is
``bench/handwritten.py`` (the seed's four activities as Temporal's samples write
them: no budget, no status), measured twice: with the seed's blocking clients
and with asynchronous ones (the stronger baseline); the Steadfast side is
``steadfast worker`` with the example agent, started through
:func:`steadfast_contract.starter.start_topic` as every starter does. For each
simulator latency (0 and 200 ms by default), each side runs a batch at the same
concurrency, and the script prints ratios against the hand-written side measured
in the same run:

* throughput (runs/s), target at 0 ms: Steadfast >= 0.9x; at 200 ms: >= 4x (the
  issue's targets, set against the blocking baseline);
* history events per run and per LLM call, read from the real histories of the
  0 ms batch, target <= 1.2x per LLM call;
* the dev server's CPU time per run (its process tree's CPU delta over a batch).

The sides take turns, batch by batch, for ``--rounds`` rounds, and each figure is the
median of a side's batches: the machine's speed drifts over minutes, and one batch
a side in a fixed order would hand the drift to whichever side runs last.

``python bench/temporal_cost.py [--runs N] [--concurrency C] [--rounds R] [--latencies 0,200]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError

import benchlib
from handwritten import LLM_CALLS as HAND_LLM_CALLS
from handwritten import WORKFLOW_NAME as HAND
from handwritten import HandInput
from steadfast_contract import budget, models, starter
from steadfast_contract.config import WorkerConfig
from steadfast_dev import embedded
from steadfast_dev.processes import Child

HERE = benchlib.ROOT / "bench"
TARGET_THROUGHPUT_0MS = 0.9
TARGET_THROUGHPUT_200MS = 4.0
TARGET_EVENTS_PER_CALL = 1.2


@dataclass
class Batch:
    runs_per_s: float
    server_cpu_ms: float
    """Dev server CPU per run."""
    worker_cpu_ms: float
    """The side's worker process CPU per run (where the rest of a run's cost goes)."""
    ids: list[str] = field(default_factory=list)


async def batch(
    s: embedded.Stack, worker: Child, start: Callable[[int], Awaitable[str]], n: int, c: int
) -> Batch:
    """``n`` runs, at most ``c`` in flight, each started by ``start`` and awaited."""
    gate = asyncio.Semaphore(c)
    ids: list[str] = []

    async def one(i: int) -> None:
        async with gate:
            wf_id = await start(i)
            ids.append(wf_id)
            await s.client.get_workflow_handle(wf_id).result()

    assert s.server is not None
    cpu0, worker0 = benchlib.tree_cpu(s.server), benchlib.tree_cpu(worker)
    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.monotonic() - t0
    cpu = benchlib.tree_cpu(s.server) - cpu0
    worker_cpu = benchlib.tree_cpu(worker) - worker0
    return Batch(n / elapsed, cpu / n * 1000, worker_cpu / n * 1000, ids)


def median_batch(batches: list[Batch]) -> Batch:
    """Each figure's median over a side's batches; the ids of all of them."""
    return Batch(
        statistics.median(b.runs_per_s for b in batches),
        statistics.median(b.server_cpu_ms for b in batches),
        statistics.median(b.worker_cpu_ms for b in batches),
        [i for b in batches for i in b.ids],
    )


async def event_counts(s: embedded.Stack, ids: list[str]) -> list[collections.Counter[str]]:
    """Each run's history events, by type."""
    counts = []
    for wf_id in ids:
        history = await s.client.get_workflow_handle(wf_id).fetch_history()
        counts.append(
            collections.Counter(
                EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events
            )
        )
    return counts


async def llm_calls(s: embedded.Stack, ids: list[str]) -> list[int]:
    calls = []
    for wf_id in ids:
        handle = s.client.get_workflow_handle(wf_id, result_type=models.ResearchResult)
        result: models.ResearchResult = await handle.result()
        calls.append(result.status.llm_calls)
    return calls


async def ledger_events(s: embedded.Stack, cfg: WorkerConfig) -> int:
    """Events in the agent's day ledger so far, in every run it continued as: its
    share of every run's server cost."""
    key = budget.ledger_key(cfg.namespace, cfg.agent, cfg.task_queue)
    wf_id = budget.ledger_id(key, budget.day_of(datetime.now(UTC)))
    total = 0
    async for run in s.client.list_workflows(f"WorkflowId = '{wf_id}'"):
        try:
            handle = s.client.get_workflow_handle(wf_id, run_id=run.run_id)
            total += len((await handle.fetch_history()).events)
        except RPCError:
            continue
    return total


def _median_run(counts: list[collections.Counter[str]]) -> collections.Counter[str]:
    totals = [c.total() for c in counts]
    return counts[totals.index(sorted(totals)[len(totals) // 2])]


#: The two hand-written baselines: the seed's blocking clients, and asynchronous ones.
CLIENTS = ("sync", "async")


def _throughput_line(latency: int, hands: dict[str, Batch], sf: Batch) -> str:
    target = TARGET_THROUGHPUT_0MS if latency == 0 else TARGET_THROUGHPUT_200MS
    parts = []
    for kind, h in hands.items():
        ratio = sf.runs_per_s / h.runs_per_s
        verdict = "meets" if ratio >= target else "BELOW"
        parts.append(
            f"vs hand-written/{kind} {h.runs_per_s:.2f} runs/s: {ratio:.2f}x ({verdict} {target}x)"
        )
    return f"    throughput: Steadfast {sf.runs_per_s:.2f} runs/s; " + "; ".join(parts)


async def _events(s: embedded.Stack, hand: Batch, sf: Batch) -> None:
    h_counts = await event_counts(s, hand.ids)
    sf_counts = await event_counts(s, sf.ids)
    calls = await llm_calls(s, sf.ids)
    h_events = statistics.median(x.total() for x in h_counts)
    sf_events = statistics.median(x.total() for x in sf_counts)
    h_per = h_events / HAND_LLM_CALLS
    sf_per = statistics.median(x.total() / k for x, k in zip(sf_counts, calls, strict=True))
    per_ratio = sf_per / h_per
    verdict = "meets" if per_ratio <= TARGET_EVENTS_PER_CALL else "ABOVE"
    span = f"{min(x.total() for x in sf_counts)}-{max(x.total() for x in sf_counts)}"
    print(
        f"    history events per run (median): hand-written {h_events:.0f}, "
        f"Steadfast {sf_events:.0f} (range {span}, {statistics.median(calls):.0f} "
        f"LLM calls): {sf_events / h_events:.2f}x"
    )
    print(
        f"    history events per LLM call: hand-written {h_per:.1f}, Steadfast "
        f"{sf_per:.1f}: {per_ratio:.2f}x ({verdict} the {TARGET_EVENTS_PER_CALL}x target)"
    )
    extra = _median_run(sf_counts) - _median_run(h_counts)
    print("    Steadfast's median run, events the hand-written run does not have:")
    for name, count in sorted(extra.items()):
        print(f"      {count:3d} {name}")


async def main(n: int, c: int, latencies: list[int], rounds: int) -> int:
    async with benchlib.stack() as s:
        cfg = benchlib.bench_config(s)
        sf_worker = s.start_worker(cfg)
        queues = {kind: f"hand-{kind}-{uuid.uuid4().hex[:8]}" for kind in CLIENTS}
        workers: dict[str, Child] = {}
        for kind, queue in queues.items():
            env = dict(
                os.environ,
                HAND_CLIENTS=kind,
                HAND_LLM_URL=cfg.model.base_url or "",
                HAND_LLM_KEY=embedded.SIM_API_KEY,
                HAND_SEARCH_URL=cfg.search.endpoint,
                HAND_DB=str(s.options.state_dir / f"hand-{kind}.db"),
            )
            workers[kind] = s.supervisor.spawn(
                f"hand-worker-{kind}",
                [sys.executable, str(HERE / "handwritten_worker.py"), s.address, queue],
                env=env,
            )
        await benchlib.wait_polling(s.client, cfg.task_queue)
        for queue in queues.values():
            await benchlib.wait_polling(s.client, queue)
        tag = uuid.uuid4().hex[:6]

        async def steadfast(i: int) -> str:
            started = await starter.start_topic(s.client, cfg, f"cost {tag} {i} {time.time()}")
            return started.workflow_id

        def hand(kind: str) -> Callable[[int], Awaitable[str]]:
            async def start(i: int) -> str:
                handle = await s.client.start_workflow(
                    HAND,
                    HandInput(f"cost {tag} {i}"),
                    id=f"hand-{uuid.uuid4()}",
                    task_queue=queues[kind],
                )
                return handle.id

            return start

        # Warm every worker (imports, sandbox, connections) before measuring.
        for kind in CLIENTS:
            await batch(s, workers[kind], hand(kind), 2, 2)
        await batch(s, sf_worker, steadfast, 2, 2)
        print(
            f"Temporal cost per run: hand-written (sync and async clients) vs Steadfast "
            f"pipeline, {n} runs at {c} concurrent per batch, medians of {rounds} rounds"
        )
        for latency in latencies:
            await s.sim_admin.set_faults(
                {"llm": {"latency_ms": latency}, "search": {"latency_ms": latency}}
            )
            hand_batches: dict[str, list[Batch]] = {kind: [] for kind in CLIENTS}
            sf_batches: list[Batch] = []
            ledger_total = 0
            for _ in range(rounds):
                for kind in CLIENTS:
                    hand_batches[kind].append(await batch(s, workers[kind], hand(kind), n, c))
                ledger0 = await ledger_events(s, cfg)
                sf_batches.append(await batch(s, sf_worker, steadfast, n, c))
                ledger_total += await ledger_events(s, cfg) - ledger0
            hands = {kind: median_batch(b) for kind, b in hand_batches.items()}
            sf = median_batch(sf_batches)
            ledger = ledger_total / (n * rounds)
            print(f"  {latency} ms simulator latency:")
            print(_throughput_line(latency, hands, sf))
            cpu = ", ".join(f"hand-written/{k} {h.server_cpu_ms:.0f} ms" for k, h in hands.items())
            best = min(h.server_cpu_ms for h in hands.values())
            print(
                f"    dev server CPU per run: {cpu}; Steadfast {sf.server_cpu_ms:.0f} ms: "
                f"{sf.server_cpu_ms / best:.2f}x the lower"
            )
            cpu = ", ".join(f"hand-written/{k} {h.worker_cpu_ms:.0f} ms" for k, h in hands.items())
            print(f"    worker CPU per run: {cpu}; Steadfast {sf.worker_cpu_ms:.0f} ms")
            if latency == latencies[0]:
                await _events(s, hands["async"], sf)
                print(f"    and on the agent's day ledger, per Steadfast run: {ledger:.1f} events")
        print(f"  machine load average: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40, help="runs per side per batch")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument(
        "--latencies", default="0,200", help="simulator latencies in ms, comma-separated"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="batches per side and latency, taken in turns"
    )
    ns = parser.parse_args()
    benchlib.run_and_exit(
        main(ns.runs, ns.concurrency, [int(x) for x in ns.latencies.split(",") if x], ns.rounds)
    )

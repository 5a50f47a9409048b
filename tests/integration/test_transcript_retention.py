"""The retention sweep deletes the transcripts of deep runs that ended without a report.

A deep run's transcript goes with its report's save; a run that ends any other
way (here: terminated mid-loop) used to leave it in the store for ever. The
sweep (:mod:`steadfast_worker.retention`) asks the real dev server about every
idle transcript, on both report stores: a closed run's goes once the keep period
has passed, a run still open keeps its own, and a workflow id the server does not
know (another namespace's, sharing the database) is left alone.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from tests.integration.conftest import HarnessFactory, base_config, merge_config
from tests.integration.test_deep_agent import deep, plan

from steadfast_worker import retention, transcript
from steadfast_worker.activities.storage import ReportStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NOW = timedelta(0)


async def _written(store: ReportStore, conversation: str) -> int:
    """Parts of ``conversation`` once the loop has stored some (0 if it never did)."""
    for _ in range(200):
        if parts := len(await store.get_parts(conversation, 100)):
            return parts
        await asyncio.sleep(0.05)
    return 0


async def test_the_sweep_deletes_transcripts_of_closed_runs_only(
    harness: HarnessFactory, backend_dsn: str
) -> None:
    async with harness(deep(6), postgres_dsn=backend_dsn) as h:
        h.sim.set_faults(plan(6, latency_ms=1000))  # a loop slow enough to stop mid-way
        store = await h.store()
        try:
            unknown = f"research-elsewhere-{uuid.uuid4().hex[:8]}/0192ffff-unknown"
            await store.put_part(unknown, 1, transcript.ASSISTANT, "{}")
            # A key of no run's form (no workflow id in it): the old sweep asked Temporal
            # about an empty id, was refused, and failed on every pass from then on.
            stray = f"stray-{uuid.uuid4().hex[:8]}"
            await store.put_part(stray, 1, transcript.ASSISTANT, "{}")
            ended = await h.start(f"ended mid-loop {uuid.uuid4().hex[:6]}")
            ended_key = f"{ended.id}/{ended.first_execution_run_id}"
            assert await _written(store, ended_key) > 0
            await ended.terminate("the test ends it without a report")
            still = await h.start(f"still running {uuid.uuid4().hex[:6]}")
            still_key = f"{still.id}/{still.first_execution_run_id}"
            assert await _written(store, still_key) > 0
            await asyncio.sleep(1.0)  # the terminated run's last activity has let go

            # With the default keep period, a run closed a moment ago keeps it.
            await retention.sweep(h.client, store, idle=NOW)
            assert await store.get_parts(ended_key, 100) != []

            # Another namespace's chain under an id this namespace knows (ids name the
            # agent and topic, not the namespace): the old sweep took it for an earlier
            # chain of the id and deleted it, while its run might still need it.
            elsewhere = f"{ended.id}/{uuid.uuid4()}"
            await store.put_part(elsewhere, 1, transcript.ASSISTANT, "{}")
            # Another agent's (another task queue): swept by its own workers.
            await retention.sweep(h.client, store, idle=NOW, keep=NOW, task_queue="other")
            assert await store.get_parts(ended_key, 100) != []

            await retention.sweep(h.client, store, idle=NOW, keep=NOW, task_queue=h.task_queue)
            assert await store.get_parts(ended_key, 100) == []
            assert await store.get_parts(still_key, 100) != []  # open: kept, however idle
            assert len(await store.get_parts(unknown, 100)) == 1  # not the server's: kept
            assert len(await store.get_parts(stray, 100)) == 1  # of no run's form: kept
            assert len(await store.get_parts(elsewhere, 100)) == 1  # not this namespace's
        finally:
            await store.close()


async def test_a_worker_sweeps_at_its_configured_retention(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path
) -> None:
    """``storage.transcriptRetention`` reaches the worker process's sweep: with 1s, a
    terminated run's transcript is gone within seconds of a worker starting, where the
    default keeps it a day."""
    async with harness(deep(6)) as h:
        h.sim.set_faults(plan(6, latency_ms=300))
        store = await h.store()
        proc = None
        try:
            ended = await h.start(f"swept soon {uuid.uuid4().hex[:6]}")
            key = f"{ended.id}/{ended.first_execution_run_id}"
            assert await _written(store, key) > 0
            await ended.terminate("the test ends it without a report")
            doc = merge_config(
                base_config(h.sim, h.task_queue, Path(h.config.storage.sqlite_path)),
                {**deep(6), "storage": {"transcriptRetention": "1s"}},
            )
            proc = await h.spawn_worker(doc, temporal_address, tmp_path / "worker.json")
            for _ in range(300):
                if not await store.get_parts(key, 100):
                    break
                await asyncio.sleep(0.1)
            assert await store.get_parts(key, 100) == [], "not swept within 30 s"
        finally:
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
            await store.close()

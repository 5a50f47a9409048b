"""``steadfast worker`` as a process: both metrics ports, and SIGTERM drains gracefully.

SIGTERM arrives while the report is being written; the worker stops polling,
lets that activity finish within ``worker.gracefulShutdown`` and exits 0. The
run then completes on another worker without rewriting the report.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from tests.integration.conftest import HarnessFactory, base_config
from tests.support.ports import free_port
from tests.support.sim import wait_for_report_call

from steadfast_contract.models import Phase

pytestmark = pytest.mark.integration


async def _scrape(port: int) -> str:
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            try:
                response = await http.get(f"http://127.0.0.1:{port}/metrics")
                if response.status_code == 200:
                    return response.text
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing serves metrics on port {port}")


async def test_metrics_ports_and_graceful_sigterm(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path
) -> None:
    metrics_port, sdk_port = free_port(), free_port()
    async with harness(start_worker=False) as h:
        doc = base_config(h.sim, h.task_queue, Path(h.config.storage.sqlite_path))
        doc["worker"].update(
            {
                "metricsPort": metrics_port,
                "sdkMetricsPort": sdk_port,
                "metricsHost": "127.0.0.1",
                "gracefulShutdown": "20s",
            }
        )
        proc = await h.spawn_worker(doc, temporal_address, tmp_path / "worker.json")
        try:
            # About three seconds of streaming: long enough to SIGTERM in the middle.
            h.sim.set_faults({"llm": {"chunk_delay_ms": 40, "match": "research report"}})
            handle = await h.start("graceful stop")
            await wait_for_report_call(h.sim, handle.id)
            steadfast = await _scrape(metrics_port)
            sdk = await _scrape(sdk_port)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        assert code == 0
        assert "steadfast_activity_attempts_total" in steadfast
        assert 'activity="generate_queries"' in steadfast
        assert "temporal_" in sdk
        # The report call in flight at SIGTERM ran to completion, once.
        served = {k: v for k, v in h.sim.served("llm").items() if k.startswith(handle.id)}
        assert sorted(served.values()) == [1, 1]
        async with h.worker():
            result = await handle.result()
        assert result.status.phase == Phase.COMPLETED
        assert result.status.retries == 0
        assert (
            h.metric(
                "steadfast_activity_attempts_total", activity="write_report", outcome="success"
            )
            == 0
        )

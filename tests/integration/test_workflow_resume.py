"""A worker killed mid-report: the run resumes on another worker within the heartbeat
timeout, no finished LLM call is repeated, and the lost attempt shows in the metrics.

The first worker is a real ``steadfast worker`` process, so the SIGKILL is real;
the second is the in-process test worker on the same task queue.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integration.conftest import HarnessFactory

from steadfast_contract.models import Phase

pytestmark = pytest.mark.integration


async def test_killed_worker_resumes_within_heartbeat_timeout(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path
) -> None:
    async with harness(start_worker=False) as h:
        # The report's stream is slowed so the kill lands in the middle of it.
        run = await h.killed_mid_report(
            "resume after kill",
            temporal_address,
            tmp_path / "worker.json",
            chunk_delay_ms=150,
            settle=0.5,
        )
        handle, result, resumed_in = run.handle, run.result, run.resumed_in

        assert result.status.phase == Phase.COMPLETED
        assert result.status.retries == 1
        served = {k: v for k, v in h.sim.served("llm").items() if k.startswith(handle.id)}
        # The query call finished before the kill and was not repeated; the report
        # call was cut off once and served once, by the second worker.
        assert sorted(served.values()) == [1, 1]
        attempts = {k: v for k, v in h.sim.attempts("llm").items() if k.startswith(handle.id)}
        assert sorted(attempts.values()) == [1, 2]
        retried = h.metric(
            "steadfast_activity_retries_total", activity="write_report", error_type="Timeout"
        )
        assert retried == 1
        # Heartbeat timeout 3 s, plus the sticky-queue hand-over and the rewrite.
        print(f"run finished {resumed_in:.1f}s after the SIGKILL")
        assert resumed_in < 15.0, resumed_in

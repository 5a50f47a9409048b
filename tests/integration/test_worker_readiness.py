"""A ``steadfast worker`` process says it is ready only while it polls Temporal.

The pod's readiness probe asks ``/readyz`` on the metrics port. A worker that cannot
reach Temporal serves that port (the old TCP probe passed) but answers 503 there; with
a Temporal that answers, it turns 200 once it polls; after SIGTERM it answers 503
while it is still draining a report, before it exits. None of this reads /metrics.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.conftest import HarnessFactory, base_config
from tests.support.ports import free_port
from tests.support.sim import wait_for_report_call

from steadfast_contract.config import READY_PATH

pytestmark = pytest.mark.integration


@contextmanager
def silent_temporal() -> Iterator[str]:
    """A loopback address whose listener takes connections and never answers: what a
    worker meets at a wrong address behind a firewall or load balancer (its connect
    hangs, ~30 s, instead of failing at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def worker_doc(doc: dict[str, Any], metrics_port: int) -> dict[str, Any]:
    doc["worker"].update(
        {"metricsPort": metrics_port, "sdkMetricsPort": 0, "metricsHost": "127.0.0.1"}
    )
    return doc


async def ready(http: httpx.AsyncClient, port: int) -> tuple[int, str] | None:
    """``/readyz``'s status and body, or None while nothing serves the port."""
    try:
        response = await http.get(f"http://127.0.0.1:{port}{READY_PATH}", timeout=2)
    except httpx.TransportError:
        return None
    return response.status_code, response.text.strip()[:80]


async def until(
    http: httpx.AsyncClient, port: int, status: int, within: float = 30
) -> tuple[int, str]:
    """Poll ``/readyz`` until it answers ``status``; what it answered last otherwise."""
    deadline = time.monotonic() + within
    seen = None
    while time.monotonic() < deadline:
        seen = await ready(http, port)
        if seen is not None and seen[0] == status:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"{READY_PATH} never answered {status} in {within}s: last {seen}")


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_not_ready_while_temporal_is_unreachable(
    harness: HarnessFactory, tmp_path: Path
) -> None:
    port = free_port()
    async with harness(start_worker=False) as h, httpx.AsyncClient() as http:
        doc = worker_doc(base_config(h.sim, h.task_queue, Path(h.config.storage.sqlite_path)), port)
        with silent_temporal() as address:
            proc = await h.spawn_worker(doc, address, tmp_path / "worker.json")
            try:
                # The port opens (a TCP probe would pass) while the connect hangs ...
                first = await until(http, port, 503)
                answers = [first]
                for _ in range(10):
                    await asyncio.sleep(0.2)
                    seen = await ready(http, port)
                    assert seen is not None
                    answers.append(seen)
                assert proc.returncode is None
            finally:
                await stop(proc)
    # ... and every answer in those two seconds said not ready, and why.
    assert set(answers) == {(503, "connecting to Temporal")}


async def test_ready_when_polling_and_not_ready_once_stopping(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path
) -> None:
    port = free_port()
    async with harness(start_worker=False) as h, httpx.AsyncClient() as http:
        doc = worker_doc(base_config(h.sim, h.task_queue, Path(h.config.storage.sqlite_path)), port)
        doc["worker"]["gracefulShutdown"] = "20s"
        proc = await h.spawn_worker(doc, temporal_address, tmp_path / "worker.json")
        try:
            became_ready = await until(http, port, 200)
            # A report streamed slowly (about three seconds) keeps the worker draining.
            h.sim.set_faults({"llm": {"chunk_delay_ms": 40, "match": "research report"}})
            handle = await h.start("readiness while draining")
            await wait_for_report_call(h.sim, handle.id)
            proc.send_signal(signal.SIGTERM)
            # Answered by the worker process itself, so it had not exited yet.
            stopping = await until(http, port, 503, within=5)
            alive_after = proc.returncode is None
            code = await asyncio.wait_for(proc.wait(), 30)
        finally:
            await stop(proc)
    assert became_ready == (200, "polling")
    assert stopping == (503, "stopping")
    assert alive_after
    assert code == 0
    # The report call in flight at SIGTERM ran to completion while it was not ready.
    served = {k: v for k, v in h.sim.served("llm").items() if k.startswith(handle.id)}
    assert sorted(served.values()) == [1, 1]

"""The LLM and search simulators for the test tiers, with a synchronous admin handle.

Two ways to run one, both independent of any worker process a test may SIGKILL:

* :func:`running_sim` -- on a daemon thread of the test process (fast to start;
  keeps answering while the test's own event loop is busy);
* :func:`spawned_sim` -- as a ``steadfast sim`` subprocess, for benchmarks and
  for tests that want the simulator outside the test process entirely.

Fixtures: ``sim_server`` (one per session) and ``sim`` (the same server, reset
before each test). Enable them with ``pytest_plugins = ["tests.support.sim"]`` in
a conftest, or wrap :func:`running_sim` in a fixture of your own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest

from steadfast_dev.processes import terminate
from steadfast_dev.sim import SimAdmin, SimConfig, SimulatorThread
from tests.support.ports import free_port


@dataclass
class SimHandle:
    """A running simulator: its URLs and synchronous admin calls."""

    base_url: str
    process: subprocess.Popen[bytes] | None = None
    admin: SimAdmin = field(init=False)
    llm_base_url: str = field(init=False)
    """``AsyncAnthropic(base_url=...)``."""
    search_url: str = field(init=False)
    """The ``http`` search provider's endpoint."""

    def __post_init__(self) -> None:
        self.admin = SimAdmin(self.base_url)
        self.llm_base_url = self.base_url
        self.search_url = f"{self.base_url}/search"

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = httpx.request(method, f"{self.base_url}{path}", timeout=10.0, **kwargs)
        response.raise_for_status()
        return cast(dict[str, Any], response.json())

    def set_faults(self, plans: Mapping[str, object]) -> dict[str, Any]:
        """``POST /_sim/faults``, e.g. ``{"llm": {"first_n": 2, "kind": "429"}}``."""
        # ASCII JSON: a plan may carry text UTF-8 cannot (a lone surrogate a model may say).
        body = json.dumps(dict(plans))
        return self._call(
            "POST", "/_sim/faults", content=body, headers={"content-type": "application/json"}
        )

    def reset(self) -> None:
        """Start-up plans, empty log, cold prompt cache."""
        self._call("POST", "/_sim/reset")

    def log(self, service: str | None = None, key: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("service", service), ("key", key)) if v is not None}
        return self._call("GET", "/_sim/log", params=params)

    def entries(self, service: str | None = None) -> list[dict[str, Any]]:
        """Every attempt (optionally of one service), oldest first."""
        return cast(list[dict[str, Any]], self.log(service)["entries"])

    def served(self, service: str = "llm") -> dict[str, int]:
        """Logical request key -> complete successful responses."""
        return cast(dict[str, int], self.log(service)["served"][service])

    def attempts(self, service: str = "llm") -> dict[str, int]:
        """Logical request key -> attempts of any outcome."""
        return cast(dict[str, int], self.log(service)["attempts"][service])


def wait_healthy(
    base_url: str, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until ``/_sim/health`` answers, or raise (at once if ``process`` exited)."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"simulator exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/_sim/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"simulator at {base_url} did not become healthy")
        time.sleep(0.05)


@contextmanager
def running_sim(config: SimConfig | None = None) -> Iterator[SimHandle]:
    """A simulator on a thread of this process, on a free port unless ``config`` says."""
    runner = SimulatorThread(config or SimConfig())
    runner.start()
    try:
        yield SimHandle(runner.simulator.base_url)
    finally:
        runner.stop()


@contextmanager
def spawned_sim(*flags: str, port: int | None = None) -> Iterator[SimHandle]:
    """``steadfast sim`` in a subprocess with extra CLI ``flags``; stopped with SIGTERM.

    Runs the verb's module directly, which skips importing the other verbs.
    """
    port = port or free_port()
    module = "steadfast_cli.commands.sim"
    command = [sys.executable, "-m", module, "--port", str(port), *flags]
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        handle = SimHandle(f"http://127.0.0.1:{port}", process)
        try:
            try:
                wait_healthy(handle.base_url, process=process)
            except RuntimeError:
                output.seek(0)
                raise RuntimeError(f"steadfast sim failed: {output.read().decode()}") from None
            yield handle
        finally:
            terminate(process)


@pytest.fixture(scope="session")
def sim_server() -> Iterator[SimHandle]:
    """One simulator for the whole session (thread-hosted, zero latency, no faults)."""
    with running_sim() as handle:
        yield handle


@pytest.fixture
def sim(sim_server: SimHandle) -> SimHandle:
    """The session's simulator, reset to no faults and an empty log for this test."""
    sim_server.reset()
    return sim_server


async def wait_for_report_call(
    sim: SimHandle, wf_id: str, *, settle: float = 0.0, queries: bool = False
) -> None:
    """Until the report call of ``wf_id`` has started (its key has no ``/ask`` part),
    or with ``queries`` its query-generation call (``/ask``), then ``settle`` seconds
    more (to let some chunks through)."""
    for _ in range(400):
        if any(
            e["key"].startswith(wf_id) and ("/ask" in e["key"]) == queries
            for e in sim.entries("llm")
        ):
            await asyncio.sleep(settle)
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the {'query' if queries else 'report'} call never started")

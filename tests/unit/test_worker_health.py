"""The worker's ``/readyz``: the verdict, and a real server that keeps it apart from
``/metrics`` (a probe must never pass for a Prometheus scrape, :mod:`lastscrape`).

tests/integration/test_worker_readiness.py shows it on a ``steadfast worker`` process."""

from __future__ import annotations

import httpx
import pytest
from tests.support.ports import free_port

from steadfast_contract.config import READY_PATH
from steadfast_worker.health import Readiness, verdict
from steadfast_worker.metrics import Metrics

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("connected", "running", "stopping", "expected"),
    [
        (False, False, False, (False, "connecting to Temporal")),
        (True, False, False, (False, "not polling")),  # namespace check, or ended
        (True, True, False, (True, "polling")),
        (True, True, True, (False, "stopping")),
        (False, False, True, (False, "stopping")),
    ],
)
def test_the_verdict(
    connected: bool, running: bool, stopping: bool, expected: tuple[bool, str]
) -> None:
    assert verdict(connected, running, stopping) == expected


class FakeWorker:
    """Only ``is_running``, which the SDK's Worker sets once its pollers start."""

    is_running = False


def test_readyz_follows_the_worker_and_is_no_scrape() -> None:
    metrics, readiness, worker, port = Metrics(), Readiness(), FakeWorker(), free_port()
    metrics.serve(port, "127.0.0.1", readiness)
    base = f"http://127.0.0.1:{port}"

    def ask() -> tuple[int, str]:
        response = httpx.get(base + READY_PATH, timeout=5)
        return response.status_code, response.text

    assert ask() == (503, "connecting to Temporal\n")
    readiness.connected(worker)
    assert ask() == (503, "not polling\n")
    worker.is_running = True
    assert ask() == (200, "polling\n")
    readiness.stopping()
    assert ask() == (503, "stopping\n")
    assert metrics.clock.scrapes == []  # none of these passed for a scrape
    scraped = httpx.get(base + "/metrics", timeout=5)
    assert scraped.status_code == 200
    assert "steadfast_llm_cost_usd_total" in scraped.text
    assert len(metrics.clock.scrapes) == 1

"""A stopping worker waits for the scrape of what it counted last, and only then.

tests/integration/test_metrics_prometheus.py shows it with a real Prometheus; here
the decision and the collector, on a registry."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from steadfast_contract.pricing import Usage
from steadfast_worker.lastscrape import LONGEST_WAIT_SECONDS, wait_seconds
from steadfast_worker.metrics import Labels, Metrics

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("scrapes", "changed", "now", "wait"),
    [
        ([], 5.0, 6.0, 0.0),  # nothing scrapes it (steadfast dev, tests)
        ([10.0, 40.0], None, 41.0, 0.0),  # nothing counted
        ([10.0, 40.0], 39.0, 41.0, 0.0),  # the last scrape has it
        ([10.0, 20.0], 20.5, 21.0, 20.0 + 16.0 - 21.0),  # 1.5 intervals after the last, +1 s
        ([10.0, 11.0], 11.5, 12.0, 11.0 + 2.5 - 12.0),  # a 1 s interval
        ([40.0], 40.5, 41.0, 0.0),  # one read: nothing scrapes it regularly
        ([0.0, 100.0], 100.5, 101.0, LONGEST_WAIT_SECONDS - 1.0),  # never above the longest
        ([10.0, 11.0], 11.5, 30.0, 0.0),  # already past the deadline
    ],
)
def test_the_wait(scrapes: list[float], changed: float | None, now: float, wait: float) -> None:
    assert wait_seconds(scrapes, changed, now) == pytest.approx(wait)


def test_a_scrape_notes_its_time_before_it_collects_a_series() -> None:
    m = Metrics()
    assert m.clock.scrapes == []  # registering is no scrape
    assert m.clock.changed is None
    m.record_llm(Labels("a", "ns"), "claude-sonnet-4-6", Usage(10, 5), 0.001)
    assert m.clock.changed is not None
    changed = m.clock.changed
    generate_latest(m.registry)
    generate_latest(m.registry)
    assert m.clock.scrapes[-1] > changed
    assert wait_seconds(m.clock.scrapes, m.clock.changed, m.clock.scrapes[-1]) == 0.0

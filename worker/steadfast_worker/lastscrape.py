"""A stopping worker's last metrics reach Prometheus before it exits.

Prometheus pulls: what a worker counted after its last scrape is lost when its
process ends. A worker is stopped in the middle of its calls by every scale-down and
rollout (SIGTERM), finishes them (:mod:`steadfast_worker.worker`'s graceful
shutdown) and exits at once, so the calls it finished while stopping, whose spend
and tokens it counted moments before, were almost never scraped: at the chart's
30 s interval, a call's cost reached the dashboards only if a scrape fell in the
second between the call's end and the exit.

So the worker notes when it is scraped (:class:`ScrapeClock`, a collector that
collects nothing, registered before every series, so a scrape that notes a time
after a change collects that change) and when its series last changed, and after
its shutdown waits for a scrape that collects the last change: for about one
interval (as seen between the last two scrapes), never more than
:data:`LONGEST_WAIT_SECONDS`, and not at all when nothing scrapes it regularly
(``steadfast dev``, tests, a one-off read) or nothing changed since the last scrape
(an idle worker exits at once). The pod's grace period leaves room for it
(``drain.EXIT_MARGIN_SECONDS``), and the pod's probes never read ``/metrics`` (one
opens the metrics port, the other asks ``/readyz`` there, :mod:`.health`): a probe
that read ``/metrics`` would pass for the scrape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Final

LONGEST_WAIT_SECONDS: Final = 40.0
"""The most a stopped worker waits for its last scrape (covers a 30 s interval)."""


class ScrapeClock:
    """A collector that yields no series and notes when it is collected."""

    def __init__(self) -> None:
        self.scrapes: list[float] = []
        """The monotonic times of the last two scrapes, oldest first."""
        self.changed: float | None = None
        """When a series last changed (monotonic), None before any change."""

    def describe(self) -> Iterable[Any]:
        return []  # registering must not count as a scrape

    def collect(self) -> Iterable[Any]:
        self.scrapes = [*self.scrapes[-1:], time.monotonic()]
        return []

    def touch(self) -> None:
        self.changed = time.monotonic()


def wait_seconds(scrapes: list[float], changed: float | None, now: float) -> float:
    """How long a stopping worker waits for a scrape after ``changed`` (0: none).

    Nothing to wait for when nothing scrapes the worker regularly (fewer than two
    scrapes: no interval to go by, and a one-off read is no Prometheus), or the last
    scrape came after the last change. Otherwise about one interval from the last
    scrape (one and a half of the last interval, plus a second), at most
    :data:`LONGEST_WAIT_SECONDS`.
    """
    if len(scrapes) < 2 or changed is None or scrapes[-1] > changed:
        return 0.0
    interval_wait = 1.5 * (scrapes[-1] - scrapes[-2]) + 1.0
    until = scrapes[-1] + min(interval_wait, LONGEST_WAIT_SECONDS)
    return max(0.0, min(until - now, LONGEST_WAIT_SECONDS))


async def scraped(clock: ScrapeClock, every: float = 0.1) -> bool:
    """Wait (bounded by :func:`wait_seconds`) until a scrape collected the last change;
    whether one did."""
    deadline = time.monotonic() + wait_seconds(clock.scrapes, clock.changed, time.monotonic())
    while True:
        if clock.changed is None or (clock.scrapes and clock.scrapes[-1] > clock.changed):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)

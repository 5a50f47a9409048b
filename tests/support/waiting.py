"""Polling until something a test waits for is true, failing with what it waited for.

The e2e tests wait on a real cluster (pods Running, a status written, Prometheus
scraping) through blocking calls such as ``kubectl``; async tests wait for work
running on their own event loop. One pair of helpers keeps the deadline, the
poll interval and the failure message the same everywhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 60.0, every: float = 0.3
) -> T:
    """Poll ``probe`` until it returns something truthy and return that; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


async def wait_until(
    what: str, check: Callable[[], bool], within: float = 10.0, every: float = 0.05
) -> None:
    """``wait_for`` for async tests whose awaited work runs on the same event loop."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(every)

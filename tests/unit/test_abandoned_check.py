"""The abandoned-work check of the integration and e2e tiers recognises what this
Python's asyncio actually logs: were the wording to change, the check would pass
everything without a word."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.abandoned import abandoned_work

pytestmark = pytest.mark.unit


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


async def _fails() -> None:
    raise RuntimeError("nobody reads this")


async def test_each_kind_of_abandoned_work_is_reported() -> None:
    with abandoned_work() as reports:
        unread = asyncio.get_running_loop().create_future()
        unread.set_exception(RuntimeError("nobody reads this"))
        failed = asyncio.ensure_future(_fails())
        pending = asyncio.ensure_future(_forever())
        await asyncio.sleep(0.01)
        del unread, failed, pending
    assert len(reports) == 3, reports
    assert sum("Future exception was never retrieved" in r for r in reports) == 1
    assert sum("Task exception was never retrieved" in r for r in reports) == 1
    assert sum("Task was destroyed but it is pending" in r for r in reports) == 1


async def test_work_that_was_read_is_not_reported() -> None:
    with abandoned_work() as reports:
        task = asyncio.ensure_future(_fails())
        with pytest.raises(RuntimeError):
            await task
        del task
    assert reports == []

"""The abandoned-work check of the test tiers recognises what this
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


def test_without_a_collection_a_dropped_failure_is_still_reported() -> None:
    """What a synchronous test is checked for (``no_abandoned_async_work`` collects no
    garbage after one): a future no cycle holds is reported when it is dropped."""

    async def drop_one() -> None:
        unread = asyncio.get_running_loop().create_future()
        unread.set_exception(RuntimeError("nobody reads this"))

    with abandoned_work(collect=False) as reports:
        asyncio.run(drop_one())
    assert len(reports) == 1, reports
    assert "Future exception was never retrieved" in reports[0]

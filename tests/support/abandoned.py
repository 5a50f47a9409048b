"""A check that no test leaves asyncio work abandoned, as a fixture for a tier's conftest.

asyncio reports a future's or a task's failure that nobody read, and a task
collected before it ended, only when the object is collected, and only as an
ERROR with a traceback in the log. In a worker's log either looks like a fault,
and the second is work dropped without a word: nothing else in a test would
notice. Import :func:`no_abandoned_work` into a tier's conftest to apply it to
every test of that tier.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
from collections.abc import Iterator

import pytest

#: What asyncio's messages for the two reports contain.
ABANDONED = ("never retrieved", "destroyed but it is pending")


class _Abandoned(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(words in message for words in ABANDONED):
            self.messages.append(message)


@contextlib.contextmanager
def abandoned_work(collect: bool = True) -> Iterator[list[str]]:
    """asyncio's reports of abandoned work within the block; with ``collect``, a
    garbage collection at its end first finds what only a cycle still held."""
    abandoned = _Abandoned()
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(abandoned)
    try:
        yield abandoned.messages
        if collect:
            gc.collect()
    finally:
        asyncio_log.removeHandler(abandoned)


def _checked(collect: bool) -> Iterator[None]:
    with abandoned_work(collect) as reports:
        yield
    assert reports == [], "asyncio reported abandoned work"


@pytest.fixture(autouse=True)
def no_abandoned_work() -> Iterator[None]:
    """Fail a test whose code (the worker's, the SDK's as we call it, or the test's)
    left a failure unread or a task unfinished."""
    yield from _checked(collect=True)


@pytest.fixture(autouse=True)
def no_abandoned_async_work(request: pytest.FixtureRequest) -> Iterator[None]:
    """:func:`no_abandoned_work` for a module of mostly synchronous tests: the
    collection (tens of milliseconds on a large heap) runs only after a coroutine
    test; a synchronous one is checked for what asyncio reported while it ran."""
    yield from _checked(collect=inspect.iscoroutinefunction(request.function))

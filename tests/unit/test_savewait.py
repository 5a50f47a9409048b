"""What a run waiting for its report store shows, and which failures it waits out."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

from steadfast_worker import failures, savewait

pytestmark = pytest.mark.unit


def failed(cause: BaseException) -> ActivityError:
    err = ActivityError(
        "activity error",
        scheduled_event_id=5,
        started_event_id=6,
        identity="worker",
        activity_type="save_report",
        activity_id="1",
        retry_state=RetryState.MAXIMUM_ATTEMPTS_REACHED,
    )
    err.__cause__ = cause
    return err


def store_down(name: str) -> ApplicationError:
    # As save_report raises it: the class in a detail, never the driver's text.
    return ApplicationError(
        f"report store unavailable: {name}", {"storeError": name}, type="DatabaseError"
    )


def round_timed_out(last: BaseException | None) -> TimeoutError:
    timeout = TimeoutError(
        "activity timeout", type=TimeoutType.SCHEDULE_TO_CLOSE, last_heartbeat_details=[]
    )
    timeout.__cause__ = last
    return timeout


@pytest.mark.parametrize(
    ("cause", "previous", "shown"),
    [
        (store_down("ConnectionRefusedError"), "", "ConnectionRefusedError"),
        (store_down("CannotConnectNowError"), "ConnectionRefusedError", "CannotConnectNowError"),
        # A round that ran out of time shows the last attempt's class...
        (round_timed_out(store_down("OSError")), "", "OSError"),
        # ...or, with none, what was shown before.
        (round_timed_out(None), "ConnectionRefusedError", "ConnectionRefusedError"),
        (round_timed_out(None), "", "Timeout"),
        # A failure from a worker of an earlier release: its type, no text.
        (
            ApplicationError("Unexpected: OSError: 10.0.0.7:5432", type="Unexpected"),
            "",
            "Unexpected",
        ),
    ],
)
def test_the_message_names_the_error_class_only(
    cause: BaseException, previous: str, shown: str
) -> None:
    assert savewait.error_class(failed(cause), previous) == shown


@pytest.mark.parametrize(
    ("cause", "waits"),
    [
        (store_down("ConnectionRefusedError"), True),
        (round_timed_out(None), True),
        (ApplicationError("bad DSN", type="Misconfigured", non_retryable=True), False),
        (ApplicationError("refused", type="Misconfigured"), False),  # a never-retry type
    ],
)
def test_only_what_may_heal_is_waited_for(cause: BaseException, waits: bool) -> None:
    assert savewait.worth_waiting(failed(cause)) is waits


def test_the_backoff_is_bounded_and_unlimited() -> None:
    policy = savewait.outage_policy()
    assert policy.maximum_interval is not None
    assert policy.maximum_interval.total_seconds() == 30
    assert policy.maximum_attempts == 0
    assert "Misconfigured" in (policy.non_retryable_error_types or [])


def test_a_save_that_ran_out_of_time_fails_naming_the_last_attempts_error() -> None:
    # The run's failure said only "save_report: timed out (3)" when its last round
    # ended while an attempt was under way, hiding that the store was never there.
    kind, message = failures.describe(failed(round_timed_out(store_down("NoReportStoreError"))))
    assert kind == "Timeout"
    assert message.startswith("save_report: timed out (")
    assert message.endswith("; last attempt: report store unavailable: NoReportStoreError")
    # With no attempt's failure under it, the timeout alone.
    assert failures.describe(failed(round_timed_out(None)))[1].endswith("timed out (3)")


def test_a_last_round_that_timed_out_before_any_attempt_keeps_the_failure_before() -> None:
    # A short last round can end before its first attempt: the run then failed with
    # a bare "timed out", though every attempt had said the store was not there.
    before = failed(store_down("NoReportStoreError"))
    assert savewait.telling(failed(round_timed_out(None)), before) is before
    named = failed(round_timed_out(store_down("OSError")))
    assert savewait.telling(named, before) is named
    again = failed(store_down("ConnectionRefusedError"))
    assert savewait.telling(again, before) is again


def test_the_runs_cancel_is_told_from_a_failed_save() -> None:
    # How the workflow sees its cancel reach the save it awaits: not an outage.
    assert savewait.cancel_of_run(failed(CancelledError("cancelled")))
    assert savewait.cancel_of_run(asyncio.CancelledError())
    assert not savewait.cancel_of_run(failed(store_down("ConnectionRefusedError")))
    assert not savewait.cancel_of_run(failed(round_timed_out(None)))

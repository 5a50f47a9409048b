"""Error mapping: which failures retry, which fail fast, and how long to wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anthropic
import httpx
import httpx2
import pytest
from temporalio.exceptions import ApplicationError

from steadfast_worker import errors

pytestmark = pytest.mark.unit

_REQUEST = httpx2.Request("POST", "http://127.0.0.1:1/v1/messages")


def _api_error(status: int, headers: dict[str, str] | None = None) -> anthropic.APIStatusError:
    response = httpx2.Response(status, headers=headers or {}, request=_REQUEST)
    client = anthropic.AsyncAnthropic(api_key="k", base_url="http://127.0.0.1:1")
    return client._make_status_error("boom", body=None, response=response)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, errors.BAD_REQUEST),
        (401, errors.UNAUTHORIZED),
        (403, errors.FORBIDDEN),
        (404, errors.NOT_FOUND),
        (422, errors.BAD_REQUEST),
        (418, errors.CLIENT_ERROR),
    ],
)
def test_client_errors_fail_fast(status: int, kind: str) -> None:
    err = errors.to_application_error(_api_error(status))
    assert err.type == kind
    assert err.non_retryable
    assert err.next_retry_delay is None
    assert not errors.is_retryable(err)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, errors.RATE_LIMITED),
        (500, errors.SERVER_ERROR),
        (502, errors.SERVER_ERROR),
        (503, errors.SERVER_ERROR),
        (504, errors.TIMEOUT),
        (529, errors.OVERLOADED),
        (408, errors.TIMEOUT),
    ],
)
def test_server_errors_retry(status: int, kind: str) -> None:
    err = errors.to_application_error(_api_error(status))
    assert err.type == kind
    assert not err.non_retryable
    assert errors.is_retryable(err)


def test_retry_after_becomes_next_retry_delay() -> None:
    err = errors.to_application_error(_api_error(429, {"retry-after": "7"}))
    assert err.next_retry_delay == timedelta(seconds=7)
    err = errors.to_application_error(_api_error(529, {"retry-after-ms": "1500"}))
    assert err.next_retry_delay == timedelta(seconds=1.5)


def test_retry_after_forms() -> None:
    now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    assert errors.parse_retry_after({"Retry-After": "3"}) == 3.0
    assert errors.parse_retry_after({"retry-after": "Tue, 24 Nov 2026 12:00:30 GMT"}, now) == 30.0
    assert errors.parse_retry_after({"retry-after": "Tue, 24 Nov 2026 11:00:00 GMT"}, now) is None
    assert errors.parse_retry_after({"retry-after": "soon"}) is None
    assert errors.parse_retry_after({"retry-after": "86400"}) == errors.MAX_RETRY_AFTER_SECONDS
    assert errors.parse_retry_after({}) is None


def test_retry_after_is_ignored_on_fail_fast_errors() -> None:
    assert errors.classify_status(400, {"retry-after": "5"}).retry_after_seconds is None


def test_timeouts_and_connection_failures_retry() -> None:
    for exc in (
        anthropic.APITimeoutError(request=_REQUEST),
        httpx2.ReadTimeout("slow", request=_REQUEST),
        httpx.ConnectTimeout("slow"),
        TimeoutError(),
    ):
        err = errors.to_application_error(exc)
        assert (err.type, err.non_retryable) == (errors.TIMEOUT, False), exc
    for exc in (
        anthropic.APIConnectionError(request=_REQUEST),
        httpx.ConnectError("refused"),
        httpx2.RemoteProtocolError("cut", request=_REQUEST),
    ):
        err = errors.to_application_error(exc)
        assert (err.type, err.non_retryable) == (errors.CONNECTION_FAILED, False), exc


def test_httpx_status_error_from_search() -> None:
    request = httpx.Request("GET", "http://127.0.0.1:1/search")
    response = httpx.Response(429, headers={"retry-after": "2"}, request=request)
    exc = httpx.HTTPStatusError("429", request=request, response=response)
    err = errors.to_application_error(exc)
    assert (err.type, err.next_retry_delay) == (errors.RATE_LIMITED, timedelta(seconds=2))


def test_details_travel_and_application_errors_pass_through() -> None:
    err = errors.to_application_error(_api_error(500), {"attempt": 2})
    assert err.details == ({"attempt": 2},)
    mine = ApplicationError("bad output", type=errors.INVALID_MODEL_OUTPUT, non_retryable=True)
    assert errors.to_application_error(mine) is mine


def test_type_list_makes_errors_non_retryable_even_without_the_flag() -> None:
    assert not errors.is_retryable(ApplicationError("x", type=errors.BUDGET_EXHAUSTED))
    assert errors.is_retryable(ApplicationError("x", type="SomethingNew"))


def test_unknown_exceptions_retry_as_unexpected() -> None:
    err = errors.to_application_error(RuntimeError("surprise"))
    assert (err.type, err.non_retryable) == (errors.UNEXPECTED, False)


def test_error_event_inside_a_streamed_answer_is_classified_by_its_type() -> None:
    response = httpx2.Response(200, request=_REQUEST)
    client = anthropic.AsyncAnthropic(api_key="k", base_url="http://127.0.0.1:1")
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    err = errors.to_application_error(client._make_status_error("m", body=body, response=response))
    assert (err.type, err.non_retryable) == (errors.OVERLOADED, False)
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}
    err = errors.to_application_error(client._make_status_error("m", body=body, response=response))
    assert (err.type, err.non_retryable) == (errors.BAD_REQUEST, True)
    assert errors.classify_api_error_type("something_new") is None

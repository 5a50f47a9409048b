"""RetryPolicySpec -> temporalio RetryPolicy, and the backoff it implies."""

from __future__ import annotations

from datetime import timedelta

import pytest

from steadfast_contract.models import RetryPolicies, RetryPolicySpec
from steadfast_contract.retry import backoff_schedule, to_retry_policy
from steadfast_worker.errors import NON_RETRYABLE_TYPES

pytestmark = pytest.mark.unit


def test_llm_default_converts() -> None:
    policy = to_retry_policy(RetryPolicies().llm)
    assert policy.initial_interval == timedelta(seconds=1)
    assert policy.backoff_coefficient == 2.0
    assert policy.maximum_interval == timedelta(seconds=60)
    assert policy.maximum_attempts == 5
    assert set(NON_RETRYABLE_TYPES) <= set(policy.non_retryable_error_types or [])
    assert "BadRequest" in (policy.non_retryable_error_types or [])
    assert "RateLimited" not in (policy.non_retryable_error_types or [])


def test_unset_maximum_interval_and_unlimited_attempts() -> None:
    policy = to_retry_policy(RetryPolicySpec(0.5, 1.5, None, 0))
    assert policy.initial_interval == timedelta(milliseconds=500)
    assert policy.maximum_interval is None
    assert policy.maximum_attempts == 0


def test_email_default_is_at_most_once() -> None:
    assert to_retry_policy(RetryPolicies().email).maximum_attempts == 1


def test_custom_non_retryable_list() -> None:
    policy = to_retry_policy(RetryPolicySpec(), ["Only"])
    assert policy.non_retryable_error_types == ["Only"]


def test_backoff_schedule_caps_at_maximum_interval() -> None:
    assert backoff_schedule(RetryPolicySpec(2.0, 2.0, 60.0, 5), 5) == [2.0, 4.0, 8.0, 16.0]
    assert backoff_schedule(RetryPolicySpec(10.0, 3.0, 30.0, 4), 4) == [10.0, 30.0, 30.0]
    assert backoff_schedule(RetryPolicySpec(), 1) == []

"""Retry policies as Temporal wants them, from the specs users write.

A ResearchAgent's ``retryPolicies`` arrive in the workflow input as
:class:`~steadfast_contract.models.RetryPolicySpec` (plain numbers, so they are
recorded in history and replay identically); the workflow turns them into
:class:`temporalio.common.RetryPolicy` here. Every policy also lists the
never-retry error types, so a fail-fast error stays fail-fast even if an
activity forgets to set ``non_retryable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from temporalio.common import RetryPolicy

from steadfast_contract.errortypes import NON_RETRYABLE_TYPES
from steadfast_contract.models import RetryPolicySpec


def to_retry_policy(
    spec: RetryPolicySpec, non_retryable: Sequence[str] = NON_RETRYABLE_TYPES
) -> RetryPolicy:
    """Convert a spec; ``maximum_attempts`` 0 stays unlimited, as in Temporal."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=spec.initial_interval_seconds),
        backoff_coefficient=spec.backoff_coefficient,
        maximum_interval=(
            timedelta(seconds=spec.maximum_interval_seconds)
            if spec.maximum_interval_seconds is not None
            else None
        ),
        maximum_attempts=spec.maximum_attempts,
        non_retryable_error_types=list(non_retryable),
    )


def backoff_schedule(spec: RetryPolicySpec, attempts: int) -> list[float]:
    """Seconds Temporal waits before attempts 2..``attempts`` (no ``retry-after``).

    Used to document and test how long a failing call keeps a run busy.
    """
    delays = []
    delay = spec.initial_interval_seconds
    for _ in range(max(attempts - 1, 0)):
        capped = delay
        if spec.maximum_interval_seconds is not None:
            capped = min(delay, spec.maximum_interval_seconds)
        delays.append(capped)
        delay *= spec.backoff_coefficient
    return delays

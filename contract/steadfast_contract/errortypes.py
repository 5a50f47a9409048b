"""The error type names a failed activity carries, and which of them never retry.

They are part of the contract: they appear in workflow failures, metric labels and
``RetryPolicy.non_retryable_error_types``, which the workflow builds (through
:mod:`steadfast_contract.retry`) without importing the HTTP clients that raise them.
"""

from __future__ import annotations

from typing import Final

# Error type names: stable strings that appear in metrics labels, workflow
# failures and RetryPolicy.non_retryable_error_types.
RATE_LIMITED: Final = "RateLimited"
OVERLOADED: Final = "Overloaded"
SERVER_ERROR: Final = "ServerError"
TIMEOUT: Final = "Timeout"
CONNECTION_FAILED: Final = "ConnectionFailed"
BAD_REQUEST: Final = "BadRequest"
UNAUTHORIZED: Final = "Unauthorized"
FORBIDDEN: Final = "Forbidden"
NOT_FOUND: Final = "NotFound"
CLIENT_ERROR: Final = "ClientError"
INVALID_MODEL_OUTPUT: Final = "InvalidModelOutput"
#: The model refused (``stop_reason: refusal``): the same request would be refused,
#: and paid for, again (:mod:`steadfast_contract.stops`).
MODEL_REFUSED: Final = "ModelRefused"
MISSING_CREDENTIALS: Final = "MissingCredentials"
MISCONFIGURED: Final = "Misconfigured"
BUDGET_EXHAUSTED: Final = "BudgetExhausted"
EMAIL_REJECTED: Final = "EmailRejected"
EMAIL_FAILED: Final = "EmailFailed"
DATABASE_ERROR: Final = "DatabaseError"
#: An answer larger than the worker reads (raised non-retryable: the same request
#: would bring the same answer).
RESPONSE_TOO_LARGE: Final = "ResponseTooLarge"
UNEXPECTED: Final = "Unexpected"
#: A worker refused a task of another agent's run, taken from a task queue the two
#: agents share (:mod:`steadfast_worker.ownership`); a retry may reach the right worker.
#: Not a ``steadfast_activity_retries_total`` label: the refusing worker records no
#: attempt (it is not the run's agent), and the next attempt counts the refused one
#: as one that vanished (``Timeout``).
OTHER_AGENTS_TASK: Final = "OtherAgentsTask"

#: Types that must never be retried, whatever the retry policy says.
NON_RETRYABLE_TYPES: Final[tuple[str, ...]] = (
    BAD_REQUEST,
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    CLIENT_ERROR,
    INVALID_MODEL_OUTPUT,
    MODEL_REFUSED,
    MISSING_CREDENTIALS,
    MISCONFIGURED,
    BUDGET_EXHAUSTED,
    EMAIL_REJECTED,
)

#: Types a failed attempt may carry when Temporal retries it: every other type name
#: (:data:`RESPONSE_TOO_LARGE` is always raised non-retryable). They are the
#: ``error_type`` of ``steadfast_activity_retries_total``, whose series a worker
#: exports at zero when it starts.
RETRYABLE_TYPES: Final[tuple[str, ...]] = (
    RATE_LIMITED,
    OVERLOADED,
    SERVER_ERROR,
    TIMEOUT,
    CONNECTION_FAILED,
    EMAIL_FAILED,
    DATABASE_ERROR,
    UNEXPECTED,
)

"""Which failures are worth retrying: typed Temporal errors from HTTP outcomes.

Temporal retries an activity unless its error is marked non-retryable, so the
whole retry behaviour of a run hangs on how each failure is classified. The
classification is a pure function of the HTTP status and headers
(:func:`classify_status`) so it is unit-tested without servers; the functions
below it only pull those facts out of ``anthropic``/``httpx`` exceptions.

- 400/401/403/404 (and other 4xx), and model output that stays invalid after
  bounded re-asks, fail fast: retrying cannot fix them and would burn budget.
- 408/409/429/5xx/529, timeouts and connection failures retry, and a
  ``retry-after`` header becomes the error's ``next_retry_delay`` so Temporal
  waits as long as the server asked instead of its own backoff.
"""

from __future__ import annotations

import contextlib
import email.utils
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import anthropic
import httpx
import httpx2
from temporalio.exceptions import ApplicationError

from steadfast_contract import credentials
from steadfast_contract.errortypes import (
    BAD_REQUEST as BAD_REQUEST,
)
from steadfast_contract.errortypes import (
    BUDGET_EXHAUSTED as BUDGET_EXHAUSTED,
)
from steadfast_contract.errortypes import (
    CLIENT_ERROR as CLIENT_ERROR,
)
from steadfast_contract.errortypes import (
    CONNECTION_FAILED as CONNECTION_FAILED,
)
from steadfast_contract.errortypes import (
    DATABASE_ERROR as DATABASE_ERROR,
)
from steadfast_contract.errortypes import (
    EMAIL_FAILED as EMAIL_FAILED,
)
from steadfast_contract.errortypes import (
    EMAIL_REJECTED as EMAIL_REJECTED,
)
from steadfast_contract.errortypes import (
    FORBIDDEN as FORBIDDEN,
)
from steadfast_contract.errortypes import (
    INVALID_MODEL_OUTPUT as INVALID_MODEL_OUTPUT,
)
from steadfast_contract.errortypes import (
    MISCONFIGURED as MISCONFIGURED,
)
from steadfast_contract.errortypes import (
    MISSING_CREDENTIALS as MISSING_CREDENTIALS,
)
from steadfast_contract.errortypes import (
    MODEL_REFUSED as MODEL_REFUSED,
)
from steadfast_contract.errortypes import (
    NON_RETRYABLE_TYPES as NON_RETRYABLE_TYPES,
)
from steadfast_contract.errortypes import (
    NOT_FOUND as NOT_FOUND,
)
from steadfast_contract.errortypes import (
    OVERLOADED as OVERLOADED,
)
from steadfast_contract.errortypes import (
    RATE_LIMITED as RATE_LIMITED,
)
from steadfast_contract.errortypes import (
    RESPONSE_TOO_LARGE as RESPONSE_TOO_LARGE,
)
from steadfast_contract.errortypes import (
    SERVER_ERROR as SERVER_ERROR,
)
from steadfast_contract.errortypes import (
    TIMEOUT as TIMEOUT,
)
from steadfast_contract.errortypes import (
    UNAUTHORIZED as UNAUTHORIZED,
)
from steadfast_contract.errortypes import (
    UNEXPECTED as UNEXPECTED,
)

#: A server asking for longer than this is treated as asking for this long:
#: an hour-long retry-after would otherwise park a run silently.
MAX_RETRY_AFTER_SECONDS: Final = 300.0

_BY_STATUS: Final[Mapping[int, tuple[str, bool]]] = {
    400: (BAD_REQUEST, False),
    401: (UNAUTHORIZED, False),
    403: (FORBIDDEN, False),
    404: (NOT_FOUND, False),
    408: (TIMEOUT, True),
    409: (SERVER_ERROR, True),
    413: (BAD_REQUEST, False),
    422: (BAD_REQUEST, False),
    429: (RATE_LIMITED, True),
    504: (TIMEOUT, True),
    529: (OVERLOADED, True),
}


#: The Messages API's error ``type`` names. A stream that fails after its 200
#: header carries the real cause only here (the HTTP status is still 200).
_BY_API_ERROR_TYPE: Final[Mapping[str, tuple[str, bool]]] = {
    "invalid_request_error": (BAD_REQUEST, False),
    "authentication_error": (UNAUTHORIZED, False),
    "permission_error": (FORBIDDEN, False),
    "not_found_error": (NOT_FOUND, False),
    "request_too_large": (BAD_REQUEST, False),
    "rate_limit_error": (RATE_LIMITED, True),
    "api_error": (SERVER_ERROR, True),
    "overloaded_error": (OVERLOADED, True),
    "timeout_error": (TIMEOUT, True),
}


@dataclass(frozen=True)
class Classified:
    """What to tell Temporal about one failed attempt."""

    type: str
    retryable: bool
    retry_after_seconds: float | None = None


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return _clamp(float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return _clamp(float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return _clamp((when - now).total_seconds())


def _clamp(seconds: float) -> float | None:
    if seconds != seconds or seconds < 0:  # NaN or in the past: use the policy's backoff
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def classify_status(status: int, headers: Mapping[str, str] | None = None) -> Classified:
    """Classify an HTTP error status; ``headers`` supply ``retry-after``."""
    retry_after = parse_retry_after(headers or {})
    if status in _BY_STATUS:
        kind, retryable = _BY_STATUS[status]
    elif status >= 500:
        kind, retryable = SERVER_ERROR, True
    elif status >= 400:
        kind, retryable = CLIENT_ERROR, False
    else:
        kind, retryable = UNEXPECTED, True
    return Classified(kind, retryable, retry_after if retryable else None)


def classify_api_error_type(name: str) -> Classified | None:
    """Classify a Messages API error ``type`` (``overloaded_error``, ...), if known."""
    found = _BY_API_ERROR_TYPE.get(name)
    return Classified(*found) if found else None


def _api_error_type(body: object) -> str:
    error = body.get("error") if isinstance(body, Mapping) else None
    kind = error.get("type") if isinstance(error, Mapping) else None
    return kind if isinstance(kind, str) else ""


def classify_exception(exc: BaseException) -> Classified:
    """Classify an exception raised by ``anthropic``, ``httpx`` or ``httpx2``."""
    if isinstance(exc, anthropic.APIStatusError):
        if exc.status_code < 400:
            # An error event inside a streamed 200 answer.
            by_type = classify_api_error_type(_api_error_type(exc.body))
            if by_type is not None:
                return by_type
        return classify_status(exc.status_code, dict(exc.response.headers))
    if isinstance(exc, httpx.HTTPStatusError | httpx2.HTTPStatusError):
        return classify_status(exc.response.status_code, dict(exc.response.headers))
    if isinstance(
        exc, anthropic.APITimeoutError | httpx.TimeoutException | httpx2.TimeoutException
    ):
        return Classified(TIMEOUT, True)
    if isinstance(exc, TimeoutError):
        return Classified(TIMEOUT, True)
    if isinstance(exc, anthropic.APIConnectionError | httpx.TransportError | httpx2.TransportError):
        return Classified(CONNECTION_FAILED, True)
    if isinstance(exc, anthropic.APIResponseValidationError):
        return Classified(INVALID_MODEL_OUTPUT, False)
    if isinstance(exc, credentials.CredentialError):
        return Classified(MISCONFIGURED, False)
    return Classified(UNEXPECTED, True)


def to_application_error(
    exc: BaseException, *details: Any, secrets: Sequence[str] = ()
) -> ApplicationError:
    """The :class:`ApplicationError` an activity raises for ``exc``.

    ``details`` travel with the failure (the workflow reads spend and attempt
    numbers from them). An ``ApplicationError`` passes through unchanged unless
    its message holds a piece of one of ``secrets``; every message is scrubbed of them.
    """
    if isinstance(exc, ApplicationError):
        if not credentials.reveals(exc.message, secrets):
            return exc
        return ApplicationError(
            credentials.scrub(exc.message, secrets),
            *exc.details,
            type=exc.type,
            non_retryable=exc.non_retryable,
            next_retry_delay=exc.next_retry_delay,
        )
    c = classify_exception(exc)
    message = credentials.scrub(f"{c.type}: {type(exc).__name__}: {exc}", secrets)
    return ApplicationError(
        message,
        *details,
        type=c.type,
        non_retryable=not c.retryable,
        next_retry_delay=(
            timedelta(seconds=c.retry_after_seconds) if c.retry_after_seconds is not None else None
        ),
    )


@contextlib.contextmanager
def credential_in_use(setting: str, value: str) -> Iterator[None]:
    """Tell what failed while parsing or using ``value``, the credential ``setting`` names.

    Any exception becomes an ``ApplicationError`` (classified as usual; a
    :class:`~steadfast_contract.credentials.CredentialError` is ``Misconfigured``)
    whose message starts with ``setting`` and holds no piece of the credential;
    the original is dropped from the chain when it held one.
    """
    try:
        yield
    except Exception as exc:
        secrets = credentials.secret_parts(value)
        if isinstance(exc, credentials.CredentialError):
            err = ApplicationError(f"{setting} {exc}", type=MISCONFIGURED, non_retryable=True)
            raise err from None
        err = to_application_error(exc, secrets=secrets)
        if err is exc:  # already told, with no piece of the credential
            raise
        told = credentials.scrub(f"{type(exc).__name__}: {exc}", secrets)
        err = ApplicationError(
            f"{setting}: {told}",
            type=err.type,
            non_retryable=err.non_retryable,
            next_retry_delay=err.next_retry_delay,
        )
        raise err from (None if credentials.chain_reveals(exc, secrets) else exc)


def is_retryable(err: ApplicationError) -> bool:
    """Whether Temporal may retry ``err`` (flag or type in the never-retry list)."""
    return not err.non_retryable and (err.type or "") not in NON_RETRYABLE_TYPES

"""What every activity shares: configuration, clients, heartbeats and attempt metrics.

Activities are methods of one object built per worker process, because their
configuration (endpoints, which environment variable holds which secret, the
database) belongs to the worker, not to the workflow input that history records.
Clients are created lazily and reused across activities.

Two helpers carry the cross-cutting behaviour:

- :meth:`ActivityBase.tracked` runs an attempt under a
  :class:`~steadfast_worker.activities.heartbeat.Heartbeater`, and counts what
  the attempts lost with their worker before it had spent.
- :meth:`ActivityBase.attempt` maps every exception to a typed
  ``ApplicationError`` and records the attempt's outcome in the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, TypeVar

import anthropic
import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from steadfast_contract import budget, credentials, stops
from steadfast_contract.activities import RunBudget
from steadfast_contract.config import WorkerConfig
from steadfast_contract.pricing import Usage
from steadfast_worker import errors, llm
from steadfast_worker.activities import daybudget, lostspend, runbudget, stickiness
from steadfast_worker.activities.heartbeat import Carried, Heartbeater
from steadfast_worker.activities.storage import (
    ReportStore,
    StoreSetupRefusedError,
    UnfitStoreError,
    open_store,
)
from steadfast_worker.metrics import (
    OUTCOME_CANCELLED,
    OUTCOME_FAILURE,
    OUTCOME_SUCCESS,
    Labels,
    Metrics,
)

T = TypeVar("T")


def will_retry(err: ApplicationError) -> bool:
    """Whether Temporal will retry the current activity if it fails with ``err`` now."""
    if not errors.is_retryable(err):
        return False
    info = activity.info()
    policy = info.retry_policy
    maximum = policy.maximum_attempts if policy is not None else 0
    return maximum == 0 or info.attempt < maximum


class UnfitStoreActivityError(ApplicationError):
    """The report store is reachable but cannot keep every report (its database's
    encoding): ``Misconfigured``, never retried, and a worker refuses to start on it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type=errors.MISCONFIGURED, non_retryable=True)


class StoreSetupRefusedActivityError(ApplicationError):
    """The report store's tables need a setup this role may not run
    (:class:`~.storage.StoreSetupRefusedError`): ``DatabaseError``, retried (a grant
    lets the next attempt save), and a worker refuses to start on it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type=errors.DATABASE_ERROR)


#: How long an attempt holding something paid for (a model's reply, a paid search's
#: result) keeps trying to store it: a database restart or failover takes seconds, and
#: what is not stored is asked, and paid for, again by the next attempt.
KEEP_SECONDS = 30.0


class ActivityBase:
    """Configuration, lazily created clients and the attempt wrapper."""

    keep_seconds = KEEP_SECONDS

    def __init__(
        self,
        config: WorkerConfig,
        metrics: Metrics | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.labels = Labels(config.agent, config.namespace)
        # At zero from the start, so a new pod's first events show in increase().
        self.metrics.start(self.labels, config.model.name)
        self.env: Mapping[str, str] = os.environ if env is None else env
        self._llm: anthropic.AsyncAnthropic | None = None
        self._http: httpx.AsyncClient | None = None
        self._store: ReportStore | None = None
        self._store_lock = asyncio.Lock()

    # -- clients -----------------------------------------------------------------

    def llm_client(self) -> anthropic.AsyncAnthropic:
        if self._llm is None:
            self._llm = llm.make_client(self.config.model, self.env)
        return self._llm

    def http_client(self) -> httpx.AsyncClient:
        """The worker's client for search endpoints and ``fetch_page``; it keeps no
        cookie. It serves every run for the life of the process, and the pages are the
        model's choice: a jar would grow with each ``Set-Cookie`` and, as a fetch dials
        the address it checked, hand one site's cookies to another on that address."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.config.model.timeout.total_seconds(),
                cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
            )
        return self._http

    async def store(self) -> ReportStore:
        async with self._store_lock:
            if self._store is None:
                name = self.config.storage.postgres_dsn_env
                dsn = self.env.get(name, "")
                setting = f"environment variable {name} (storage.postgresDsnEnv)"
                with errors.credential_in_use(setting, dsn):
                    if dsn:
                        credentials.check_url(dsn, ("postgresql", "postgres"), path_allowed=True)
                    try:
                        self._store = await open_store(dsn, self.config.storage.sqlite_path)
                    except UnfitStoreError as exc:
                        raise UnfitStoreActivityError(f"{setting}: {exc}") from None
                    except StoreSetupRefusedError as exc:
                        raise StoreSetupRefusedActivityError(f"{setting}: {exc}") from None
            return self._store

    async def kept(self, write: Callable[[], Awaitable[T]]) -> T:
        """``write``, a store write of something paid for, tried again for
        :attr:`keep_seconds` while the store refuses it (the attempt heartbeats on)."""
        delay, deadline = 0.25, time.monotonic() + self.keep_seconds
        while True:
            try:
                return await write()
            except Exception as err:
                if time.monotonic() + delay > deadline:
                    raise
                activity.logger.warning(
                    "the report store did not take what this attempt paid for (%s); "
                    "trying again in %.2fs",
                    type(err).__name__,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4.0)

    def secrets(self) -> list[str]:
        """The secret parts of every credential this worker holds, as they are now."""
        c = self.config
        keys = (c.model.api_key_env, c.search.api_key_env, c.temporal.api_key_env)
        urls = (c.notify.email.smtp_url_env, c.storage.postgres_dsn_env)
        found: list[str] = []
        for name in (*keys, *urls):
            found += credentials.secret_parts(self.env.get(name, "")) if name else []
        return found

    @contextlib.contextmanager
    def unused_if_raised(
        self, carried: Carried, model: str, request: str, cost_usd: float
    ) -> Iterator[None]:
        """Around what is made of a paid, settled reply: if that raises, the reply
        produced nothing, and its cost is counted so (unless it already was), as the
        attempt that asks again pays again."""
        try:
            yield
        except Exception:
            if request not in carried.counted:
                carried.count_failed(request, cost_usd)
                self.metrics.record_retry_cost(self.labels, model, cost_usd)
            raise

    def refused(
        self, carried: Carried, model: str, request: str, cost_usd: float, step: str, reason: str
    ) -> ApplicationError:
        """The end of a step whose request the model refused: counted (a refusal, and
        spend that produced nothing), and a non-retryable ``ModelRefused``, since the
        same request would be refused, and billed, again."""
        self.metrics.record_refusal(self.labels, model, cost_usd)
        carried.count_failed(request, cost_usd)
        return ApplicationError(
            stops.refusal_message(step, reason),
            FailureDetailsFactory(carried)(),
            type=errors.MODEL_REFUSED,
            non_retryable=True,
        )

    async def aclose(self) -> None:
        """Close clients; called when the worker stops."""
        if self._llm is not None:
            await self._llm.close()
        if self._http is not None:
            await self._http.aclose()
        if self._store is not None:
            await self._store.close()

    # -- attempts ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def tracked(
        self,
        name: str,
        *,
        billed: bool = False,
        model: str = "",
        run_budget: RunBudget | None = None,
        stored: Callable[[], Awaitable[Mapping[str, float]]] | None = None,
    ) -> AsyncIterator[Heartbeater]:
        """One attempt of activity ``name``, heartbeating: the wrapper every activity runs in.

        With ``billed`` (the LLM activities, calling ``model``) the progress carried
        from earlier attempts (failed spend, calls) is read into the heartbeat state
        and attached to a failure, so the workflow can account for an activity that
        failed for good. What an attempt lost with its worker spent becomes failed
        spend here: each request it made, at what the day's ledger (``run_budget``'s)
        settled it at, and one it left reserved at what its last heartbeat said was
        billed, or at its reservation (no heartbeat told its cost). ``stored`` says
        which requests' replies the activity kept in the report store, by day's-ledger
        key and cost: the activity uses those and counts them itself.
        """
        carried = Carried.from_info() if billed else Carried()
        attempt = activity.info().attempt
        details = FailureDetailsFactory(carried) if billed else None
        async with self.attempt(name, details=details), Heartbeater(carried) as beat:
            if billed and carried.was_lost(attempt):
                kept = await lostspend.stored_or_nothing(stored)
                charged, usage = await lostspend.count_lost(carried, attempt, run_budget, kept)
                if charged:
                    self.metrics.record_llm(self.labels, model, usage, charged)
                    self.metrics.record_retry_cost(self.labels, model, charged)
                beat.beat()  # what it counted reaches the server first
            yield beat

    @contextlib.asynccontextmanager
    async def attempt(
        self, name: str, *, details: FailureDetailsFactory | None = None
    ) -> AsyncIterator[None]:
        """Run one attempt: typed errors out, one ``activity_attempts`` sample in.

        ``details`` builds the payload attached to a failure (spend so far), so
        the workflow can account for an activity that failed for good.

        An attempt that vanished (its worker was killed, so Temporal timed it
        out) recorded nothing; the attempt after it records it, as a failure
        retried for ``Timeout``, so the metrics match the attempts history shows.
        """
        info = activity.info()
        if info.attempt > 1 and Carried.from_info().ended_attempt != info.attempt - 1:
            self.metrics.record_attempt(self.labels, name, OUTCOME_FAILURE, errors.TIMEOUT)
            await stickiness.replacing_lost_attempt()
        async with self.outcome(name, details=details):
            yield

    @contextlib.asynccontextmanager
    async def outcome(
        self, name: str, *, details: FailureDetailsFactory | None = None
    ) -> AsyncIterator[None]:
        """The outcome of one attempt at ``name``: typed errors out, one metric sample in.

        :meth:`attempt` wraps a whole activity in it; the search step wraps each of
        its queries, so a query's attempts count as ``web_search`` ones.
        """
        try:
            yield
        except (asyncio.CancelledError, CancelledError):
            self.metrics.record_attempt(self.labels, name, OUTCOME_CANCELLED)
            raise
        except Exception as exc:
            extra = [details()] if details is not None else []
            # The last line of defence: whatever a client library said, no piece
            # of a credential leaves the activity (history, logs, status).
            secrets = self.secrets()
            err = errors.to_application_error(exc, *extra, secrets=secrets)
            retry_type = (err.type or errors.UNEXPECTED) if will_retry(err) else None
            self.metrics.record_attempt(self.labels, name, OUTCOME_FAILURE, retry_type)
            cut = credentials.chain_reveals(exc, secrets)
            if err is exc:
                if cut:  # its own message is clean; what it was raised from is not
                    exc.__cause__, exc.__suppress_context__ = None, True
                raise
            raise err from (None if cut else exc)
        self.metrics.record_attempt(self.labels, name, OUTCOME_SUCCESS)


class FailureDetailsFactory:
    """Callable producing the details dict attached to a failed attempt."""

    def __init__(self, state: Carried) -> None:
        self.state = state

    def __call__(self) -> dict[str, Any]:
        return {
            "attempt": activity.info().attempt,
            "failed_cost_usd": self.state.failed_cost_usd,
            "calls": self.state.calls,
        }


def ensure_affordable(run: RunBudget | None, carried: Carried, reserve_usd: float) -> None:
    """Refuse the next request unless it fits the run's budget (docs/design.md §3).

    What counts as spent: the run's spend when the activity was scheduled, plus
    everything this activity was billed so far, earlier attempts included. A
    refusal is the non-retryable ``BudgetExhausted``, carrying that spend and the
    numbers that decided, so the workflow ends the run as it does on its own check.
    """
    if run is None:
        return
    decision = budget.check(run.spent_usd + carried.failed_cost_usd, reserve_usd, run.limit_usd)
    if decision.fits:
        return
    raise ApplicationError(
        f"run budget exhausted: {decision.message}",
        {**FailureDetailsFactory(carried)(), **decision.as_details()},
        type=errors.BUDGET_EXHAUSTED,
        non_retryable=True,
    )


async def reserve_request(
    run: RunBudget | None, carried: Carried, reserve_usd: float, ask: int = 0
) -> tuple[str | None, str]:
    """Before an LLM request: the run's check, then the day's reservation, noted in the
    heartbeat state so an attempt lost mid-stream is settled by the next one.

    ``ask`` tells apart the requests of one attempt (a re-ask). Returns the day's
    ledger id (None without a daily budget) and the request's key, for
    :func:`settle_request` once the request's cost is known.
    """
    run = await runbudget.current(run, carried, ask)
    ensure_affordable(run, carried, reserve_usd)
    key = daybudget.request_key(ask)
    ledger = await daybudget.reserve_day(run, key, reserve_usd, FailureDetailsFactory(carried)())
    carried.inflight_request, carried.inflight_ledger = key, ledger or ""
    carried.in_flight(Usage(), 0.0)  # nothing of this request billed yet
    return ledger, key


async def settle_request(carried: Carried, ledger: str | None, key: str, cost_usd: float) -> None:
    """After a request :func:`reserve_request` reserved: the day's ledger is told what it
    cost (0 for an error answer, which bills nothing), and the heartbeat state forgets
    it, so no later attempt settles it again."""
    await daybudget.settle_day(ledger, key, cost_usd)
    carried.inflight_request = carried.inflight_ledger = ""

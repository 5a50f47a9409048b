"""What an activity carries from one attempt to the next, and the heartbeats that carry it.

Temporal keeps an activity's last heartbeat details across its attempts: they are
the only memory a retry has of an attempt that vanished with its worker. An LLM
activity puts there what it has spent (failed attempts, the request in flight and
what it was billed so far) and what it has finished, so the next attempt counts
the spend and does not do the work again. :class:`Heartbeater` sends them in the
background while the activity waits on the network, so a dead worker is noticed
after the heartbeat timeout (seconds), not the start-to-close timeout (minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity

from steadfast_contract.pricing import Usage


@dataclass
class Carried:
    """Heartbeat details that survive into the next attempt of the same activity."""

    failed_cost_usd: float = 0.0
    calls: int = 0
    progress: int = 0
    ended_attempt: int = 0
    """The last attempt that ended here (and recorded its own failure metrics);
    an attempt that vanished with its worker never gets to set it."""
    inflight_cost_usd: float = 0.0
    """Estimated spend of the request in flight (a stream's input and its output
    so far). An attempt lost with its worker leaves it here, and the next attempt
    counts it as failed spend; an attempt that ends counts it itself."""
    inflight_input_tokens: int = 0
    inflight_output_tokens: int = 0
    inflight_request: str = ""
    """The day's-ledger key of the request in flight, and its ledger: an attempt lost
    with its worker leaves them, and the next attempt settles it at the estimate."""
    inflight_ledger: str = ""
    finished: dict[str, Any] = field(default_factory=dict)
    """Parts of the activity's work that are done (the search step's answered or failed
    queries, by index): a retry does not do them again."""
    counted: dict[str, float] = field(default_factory=dict)
    """Day's-ledger keys of the settled requests whose cost ``failed_cost_usd`` holds,
    and what it holds for each. The ledger tells an attempt after a lost one what each
    of the lost one's requests was settled at; it counts those not listed here (their
    heartbeat never came). A request counted at a heartbeat's estimate whose reply
    the attempt then takes from the store adds only what the reply cost above it."""

    @classmethod
    def from_info(cls) -> Carried:
        details = activity.info().heartbeat_details
        if not details:
            return cls()
        raw = details[0]
        if isinstance(raw, Mapping):
            return cls(
                float(raw.get("failed_cost_usd", 0.0)),
                int(raw.get("calls", 0)),
                int(raw.get("progress", 0)),
                int(raw.get("ended_attempt", 0)),
                float(raw.get("inflight_cost_usd", 0.0)),
                int(raw.get("inflight_input_tokens", 0)),
                int(raw.get("inflight_output_tokens", 0)),
                str(raw.get("inflight_request", "")),
                str(raw.get("inflight_ledger", "")),
                dict(raw.get("finished") or {}),
                _counted(raw.get("counted")),
            )
        return cls()

    def as_details(self) -> dict[str, Any]:
        return {
            "failed_cost_usd": self.failed_cost_usd,
            "calls": self.calls,
            "progress": self.progress,
            "ended_attempt": self.ended_attempt,
            "inflight_cost_usd": self.inflight_cost_usd,
            "inflight_input_tokens": self.inflight_input_tokens,
            "inflight_output_tokens": self.inflight_output_tokens,
            "inflight_request": self.inflight_request,
            "inflight_ledger": self.inflight_ledger,
            **({"finished": self.finished} if self.finished else {}),
            **({"counted": self.counted} if self.counted else {}),
        }

    def count_failed(self, request: str, cost_usd: float) -> None:
        """Count a settled request's cost as failed spend, and say so in the same state
        (one heartbeat carries both, or neither)."""
        self.failed_cost_usd += cost_usd
        if request:
            self.counted[request] = self.counted.get(request, 0.0) + cost_usd

    def count_unsettled(self) -> None:
        """An attempt that ends failing with a request reserved and billed but neither
        settled nor counted (a cancel, a drain's deadline, while its paid reply was being
        stored or settled) counts it as failed spend here, once: the attempt is ending,
        so the next one does not take it for lost and would never count it. A reply of
        it that was stored after all is then reported above this count only
        (:func:`.storedwork.their_reply`)."""
        request, cost = self.inflight_request, self.inflight_cost_usd
        if request and cost > 0 and request not in self.counted:
            self.count_failed(request, cost)
            self.in_flight(Usage(), 0.0)

    def in_flight(self, usage: Usage, cost_usd: float) -> None:
        """Note what the request in flight has cost so far (heartbeated with the rest)."""
        self.inflight_cost_usd = cost_usd
        self.inflight_input_tokens = (
            usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
        )
        self.inflight_output_tokens = usage.output_tokens

    def forget_in_flight(self) -> tuple[Usage, float, str, str]:
        """The request in flight as the state last had it (what it cost so far, its
        day's-ledger key and ledger), forgotten here: an attempt after a lost one
        counts it once."""
        usage = Usage(self.inflight_input_tokens, self.inflight_output_tokens)
        named = (usage, self.inflight_cost_usd, self.inflight_request, self.inflight_ledger)
        self.in_flight(Usage(), 0.0)
        self.inflight_request = self.inflight_ledger = ""
        return named

    def was_lost(self, attempt: int) -> bool:
        """Whether the attempt before ``attempt`` vanished without ending here."""
        return attempt > 1 and self.ended_attempt != attempt - 1


def _counted(raw: object) -> dict[str, float]:
    """``counted`` as heartbeated: a mapping, or the list of keys an older worker sent
    (each then taken as counted at nothing, so a reply taken from the store is counted
    in full again: an overstatement, never an understatement)."""
    if isinstance(raw, Mapping):
        return {str(k): float(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return {str(k): 0.0 for k in raw}
    return {}


#: How long news waits in :meth:`Heartbeater.soon` for the activity to end first.
SOON_SECONDS = 0.05


class Heartbeater:
    """Heartbeats ``state`` periodically until closed; publishes changes promptly."""

    def __init__(self, state: Carried) -> None:
        self.state = state
        timeout = activity.info().heartbeat_timeout
        seconds = timeout.total_seconds() if timeout else 10.0
        # A third of the timeout leaves room for two lost heartbeats.
        self._interval = max(min(seconds / 3.0, 5.0), 0.1)
        self._task: asyncio.Task[None] | None = None
        self._due: asyncio.TimerHandle | None = None

    def beat(self) -> None:
        activity.heartbeat(self.state.as_details())

    def soon(self) -> None:
        """Heartbeat the state :data:`SOON_SECONDS` from now, unless a heartbeat is
        already due or the activity ends first (or :meth:`not_soon` drops it). The SDK
        sends an attempt's first heartbeat at once, so news that comes just before the
        end (every search of a step answering together, a reply that streams at once)
        would cost an RPC that nothing needs: a success reports the result instead,
        and a failure sends the state with it."""
        if self._due is None:
            self._due = asyncio.get_running_loop().call_later(SOON_SECONDS, self._beat_due)

    def not_soon(self) -> None:
        """Drop the heartbeat :meth:`soon` made due, if it has not gone yet."""
        if self._due is not None:
            self._due.cancel()
            self._due = None

    def _beat_due(self) -> None:
        self._due = None
        self.beat()

    async def _loop(self) -> None:
        # Not at once: the SDK sends the first heartbeat of an attempt at once and
        # holds every later one for 0.8 heartbeat timeouts, so the first should carry
        # news -- the request in flight, its spend so far -- not the state the attempt
        # started from. An attempt that fails sooner sends its state with its failure.
        while True:
            await asyncio.sleep(self._interval)
            self.beat()

    async def __aenter__(self) -> Heartbeater:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        if exc_type is not None:
            self.state.count_unsettled()
        self.state.ended_attempt = activity.info().attempt
        self.not_soon()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if exc_type is not None:
            # The final state must reach the server with the attempt's failure, so a
            # retry starts from it. A success needs none: nothing retries it.
            self.beat()

"""The per-run budget: may the next LLM call start?

docs/design.md §3 promises that a run never overspends by more than one call. The rule
that delivers it: before each call, reserve the most that call can cost (every
output token it may produce at ``max_tokens`` plus an estimate of its input) and
start it only if what was already spent plus that reservation fits the limit.
The only overspend left is an input estimate that was too low, bounded by one
call.

The workflow checks before each LLM activity; the activity checks again before
each request it sends (a re-ask, a retry), adding what it has spent itself, so
neither re-asks nor a retry policy (even ``maximumAttempts: 0``) escape the rule.

A call that does not fit does not end the run: the run pauses before it (phase
``AwaitingBudget``) until the budget is raised, the day turns, or
``budget.pauseTimeout`` runs out (:func:`raise_refusal` decides which raises a
run accepts).

The day's budget is a ledger per agent and UTC day (:class:`DayBook`, kept by a
small workflow whose id :func:`ledger_id` derives): each request reserves its
worst case from the day before it is sent (:func:`DayBook.grant`) and settles
what it really cost afterwards (:func:`DayBook.settle`), so the day's overspend
is bounded by the estimates of the calls in flight, however many topics start.

Pure functions only: the workflow makes these decisions too, and they must replay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC as _UTC
from datetime import datetime, timedelta

from steadfast_contract.ledger import ChargeLostResult
from steadfast_contract.models import Pricing
from steadfast_contract.pricing import (
    WEB_SEARCH_RESULT_TOKENS,
    dearest_input_per_mtok,
    web_search_usd,
)

#: Rule of thumb for English text; the simulator counts the same way.
CHARS_PER_TOKEN = 4
#: Role markers, system prompt framing and tool definitions the text alone misses.
OVERHEAD_TOKENS = 64
#: Which budget refused a call: the run's ``maxUSDPerRun`` or the agent's ``maxUSDPerDay``.
RUN = "run"
DAY = "day"
_NAMES = {RUN: "run budget", DAY: "daily budget"}


def estimate_tokens(text_chars: int) -> int:
    """Input tokens for a prompt of ``text_chars`` characters (rounded up, plus framing):
    characters as :func:`token_chars` counts them, for text that is not all ASCII."""
    return math.ceil(max(text_chars, 0) / CHARS_PER_TOKEN) + OVERHEAD_TOKENS


def token_chars(text: str) -> int:
    """``text``'s length in English characters, the unit :func:`estimate_tokens` takes.

    Four ASCII characters make about a token, but a character of Chinese, Japanese,
    Korean, Cyrillic or Greek text is about a token of its own, and one outside the
    Basic Multilingual Plane (most emoji) about two. Counted as ``len(text)``, a
    prompt in Chinese was reserved at a quarter of its tokens, and a run could
    overspend its budget by three quarters of a whole prompt's price. So each UTF-16
    code unit of a non-ASCII character counts :data:`CHARS_PER_TOKEN` characters
    here; ASCII text counts its length, as before. The simulator counts the same way.
    """
    if text.isascii():
        return len(text)
    ascii_chars = len(text.encode("ascii", "ignore"))
    units = len(text.encode("utf-16-le", "surrogatepass")) // 2
    return ascii_chars + CHARS_PER_TOKEN * (units - ascii_chars)


def reserve_usd(
    max_tokens: int,
    input_tokens: int,
    pricing: Pricing,
    *,
    web_searches: int = 0,
    result_tokens: int = WEB_SEARCH_RESULT_TOKENS,
) -> float:
    """The most one call may cost: ``max_tokens`` of output plus its input.

    Every input token is priced at the dearest rate one can be billed at: a request
    may write its whole prompt to the cache for an hour (twice the input price), and a
    deep run's turns write every turn, so a cache write is not a one-off to ignore.
    Each of ``web_searches`` server-side searches adds its fee and ``result_tokens`` of
    results, which the API bills as input of the same request
    (:data:`~steadfast_contract.pricing.WEB_SEARCH_RESULT_TOKENS`; 0 only to replay runs
    recorded before results were reserved).
    """
    return (
        max_tokens * pricing.output_per_mtok + input_tokens * dearest_input_per_mtok(pricing)
    ) / 1_000_000.0 + web_searches * web_search_usd(pricing, result_tokens)


@dataclass(frozen=True)
class BudgetDecision:
    """Whether the next call may start, with the numbers that decided it."""

    fits: bool
    spent_usd: float
    reserve_usd: float
    limit_usd: float
    scope: str = RUN
    """:data:`RUN` or :data:`DAY`: which budget decided."""
    day: str = ""
    """For :data:`DAY`: the UTC date (``YYYY-MM-DD``) whose budget decided."""

    @property
    def message(self) -> str:
        verdict = "fits within" if self.fits else "would exceed"
        spent = "the day spent" if self.scope == DAY else "spent"
        of_day = f" ({self.day}, UTC)" if self.day else ""
        return (
            f"{spent} ${self.spent_usd:.4f} + next call up to ${self.reserve_usd:.4f} "
            f"{verdict} the {_NAMES.get(self.scope, self.scope)} of ${self.limit_usd:.4f}{of_day}"
        )

    def as_details(self) -> dict[str, float | str]:
        """The numbers, for the details of a ``BudgetExhausted`` failure."""
        return {
            "spent_usd": self.spent_usd,
            "reserve_usd": self.reserve_usd,
            "limit_usd": self.limit_usd,
            "budget": self.scope,
            "day": self.day,
        }

    @classmethod
    def refused(cls, details: Mapping[str, object]) -> BudgetDecision:
        """The refusal whose :meth:`as_details` these are (missing numbers read as 0)."""

        def number(key: str) -> float:
            value = details.get(key, 0.0)
            return float(value) if isinstance(value, int | float) else 0.0

        scope = str(details.get("budget") or RUN)
        day = str(details.get("day") or "")
        return cls(
            False, number("spent_usd"), number("reserve_usd"), number("limit_usd"), scope, day
        )


def check(spent_usd: float, reserve: float, limit_usd: float) -> BudgetDecision:
    """Decide whether a call reserving ``reserve`` may start after ``spent_usd``."""
    # A hair of tolerance so a budget set to exactly N calls allows N calls
    # despite floating-point sums.
    fits = spent_usd + reserve <= limit_usd + 1e-12
    return BudgetDecision(fits, spent_usd, reserve, limit_usd)


def one_call_usd(max_tokens: int, output_per_mtok: float) -> float:
    """What one call's output can cost at most: ``max_tokens`` at the output price.

    The floor below which a per-run budget cannot pay for a single call, whatever
    its prompt; the operator refuses a spec whose ``maxUSDPerRun`` is under it.
    """
    return max_tokens * output_per_mtok / 1_000_000


def raise_refusal(
    spent_usd: float,
    max_usd_per_run: float | None,
    max_usd_per_day: float | None,
    closed: str = "",
) -> str:
    """Why a run refuses new limits (``""``: it accepts them).

    ``closed`` is the phase of a run that is over. A limit must be positive, and a
    run's limit cannot go below what the run already spent: that would not stop a
    call, it would only make the figures lie.
    """
    if closed:
        return f"the run is over (phase {closed}); a budget can only change while it runs"
    if max_usd_per_run is None and max_usd_per_day is None:
        return "give a new limit: --max-usd (the run's) or --max-usd-per-day"
    for name, value in (("max_usd_per_run", max_usd_per_run), ("max_usd_per_day", max_usd_per_day)):
        if value is not None and not value > 0:
            return f"{name} must be above 0, got {value}"
    if max_usd_per_run is not None and max_usd_per_run < spent_usd - 1e-12:
        return (
            f"the run already spent ${spent_usd:.4f}; its budget cannot go below that "
            f"(asked ${max_usd_per_run:.4f})"
        )
    return ""


# --- the day's ledger ---------------------------------------------------------------

#: A day's ledger stays open this long after its UTC day ends, so the calls that
#: started before midnight still settle into it.
LEDGER_GRACE = timedelta(hours=1)
#: Settled requests a ledger remembers (the newest), so a resent settle is not counted
#: twice; a busy day's book stays a small payload when its ledger continues as new.
SETTLED_KEPT = 2000


def day_of(now: datetime) -> str:
    """The UTC date of ``now`` as the ledger names it (``YYYY-MM-DD``)."""
    return now.date().isoformat() if now.tzinfo is None else now.astimezone(_UTC).date().isoformat()


def seconds_to_next_day(now: datetime) -> float:
    """Seconds from ``now`` to the next UTC midnight (never 0: at least a millisecond)."""
    utc = now if now.tzinfo is None else now.astimezone(_UTC)
    midnight = datetime(utc.year, utc.month, utc.day, tzinfo=utc.tzinfo) + timedelta(days=1)
    return max((midnight - utc).total_seconds(), 0.001)


def days_spanned(first: datetime, now: datetime) -> list[str]:
    """The UTC days whose ledgers may hold requests of an activity first scheduled at
    ``first``: its days up to ``now``'s, the last two at most.

    An attempt reserves in the ledger of the day it sends its request, so the
    attempts of one activity can reserve across midnight; an attempt that replaces
    one lost with its worker charges every one of these ledgers. Two suffice: the
    ledger of the day before yesterday closed an hour after its day
    (:data:`LEDGER_GRACE`), before yesterday ended.
    """
    last = datetime.fromisoformat(day_of(now)).date()
    start = max(datetime.fromisoformat(day_of(first)).date(), last - timedelta(days=1))
    start = min(start, last)  # a first schedule "after" now is a clock's skew
    return [(start + timedelta(days=n)).isoformat() for n in range((last - start).days + 1)]


def ledger_key(namespace: str, agent: str, task_queue: str) -> str:
    """Whose days a ledger counts: one agent, on the task queue its workers poll.

    Namespace and agent are DNS labels, so ``/`` and ``@`` cannot appear in them and
    two agents never share a key (``a-b``/``c`` and ``a``/``b-c`` stay apart). The
    task queue is part of it because the ledger runs there.
    """
    return f"{namespace}/{agent}@{task_queue}"


def ledger_id(key: str, day: str) -> str:
    """The workflow id of one agent's ledger for one UTC day."""
    return f"steadfast-budget/{key}/{day}"


@dataclass
class DayBook:
    """One agent's spend on one UTC day: settled calls, and reservations in flight.

    Reservations and settlements are keyed by request, so a resent reserve or settle
    (an activity attempt that sends it again) is answered as the first one was.
    """

    spent_usd: float = 0.0
    reserved: dict[str, float] = field(default_factory=dict)
    settled: dict[str, float] = field(default_factory=dict)
    """Settled requests and what they cost (a resent settle changes nothing)."""

    @property
    def committed_usd(self) -> float:
        """Spent, plus every reservation in flight."""
        return self.spent_usd + sum(self.reserved.values())

    def grant(self, key: str, reserve: float, limit_usd: float, day: str = "") -> BudgetDecision:
        """Reserve ``reserve`` for request ``key`` if the day can still pay for it."""
        if self.holds(key):
            others = self.committed_usd - self.reserved.get(key, 0.0)
            return BudgetDecision(True, others, reserve, limit_usd, DAY, day)
        decision = check(self.committed_usd, reserve, limit_usd)
        if decision.fits:
            self.reserved[key] = reserve
        return BudgetDecision(decision.fits, self.committed_usd, reserve, limit_usd, DAY, day)

    def charge_lost(self, prefixes: Sequence[str], named: Mapping[str, float]) -> ChargeLostResult:
        """Settle the requests of attempts lost with their worker that are still
        reserved: each of ``named`` at what a heartbeat said it was billed, and every
        other under ``prefixes`` at its reservation (its worst case: no heartbeat told
        its cost, and it may have been sent). A request already settled keeps what it
        was settled at, so a second call charges nothing; the answer still lists it
        (its ``costs``), since the attempt that settled it may have been lost before
        any heartbeat told its run what it cost."""
        lost = ChargeLostResult()
        for key in list(self.reserved):
            if key in named:
                cost = max(named[key], 0.0)
                lost.named_usd += cost
            elif any(key.startswith(p) for p in prefixes):
                cost = self.reserved[key]
            else:
                continue
            self.settle(key, cost)
            lost.charged_usd += cost
            lost.requests += 1
        lost.costs = {
            k: c
            for k, c in self.settled.items()
            if k in named or any(k.startswith(p) for p in prefixes)
        }
        return lost

    def holds(self, key: str) -> bool:
        """Whether request ``key`` was reserved here (and maybe settled since)."""
        return key in self.reserved or key in self.settled

    def settled_below(self, key: str, cost_usd: float) -> bool:
        """Whether request ``key`` was settled at less than ``cost_usd``: charged as lost
        at what a heartbeat said it had billed so far, while its attempt, cut off from
        Temporal but alive, went on and was billed in full."""
        return key in self.settled and cost_usd > self.settled[key]

    def settle(self, key: str, cost_usd: float, *, raise_settled: bool = False) -> None:
        """Replace request ``key``'s reservation with what it really cost. A request
        settled already keeps its cost (a resent settle changes nothing), or with
        ``raise_settled`` the higher of the two: the day may overstate a request, never
        understate it."""
        if key in self.settled:
            if raise_settled and self.settled_below(key, cost_usd):
                self.spent_usd += cost_usd - self.settled[key]
                self.settled[key] = cost_usd
            return
        self.reserved.pop(key, None)
        self.settled[key] = cost_usd
        self.spent_usd += cost_usd
        while len(self.settled) > SETTLED_KEPT:
            del self.settled[next(iter(self.settled))]

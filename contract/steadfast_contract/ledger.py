"""The wire contract of the day's budget ledger: its workflow, updates and query.

One small workflow per agent and UTC day (id from
:func:`steadfast_contract.budget.ledger_id`) holds the day's
:class:`~steadfast_contract.budget.DayBook`. LLM activities reach it with
update-with-start before each request (:data:`RESERVE_UPDATE`: the request waits
for the answer) and settle it afterwards with a signal (:data:`SETTLE_SIGNAL`: the
server keeps it durably at once, so a worker draining on SIGTERM, which no longer
runs workflow tasks, still finishes its call); the operator may read it
(:data:`LEDGER_QUERY`). An attempt that follows one lost with its worker charges
what the lost one reserved and nobody settled (:data:`CHARGE_LOST_UPDATE`): a request
whose heartbeat never reached Temporal may have been sent and billed; the answer
also says what the lost one settled itself, which no heartbeat may have told. Recorded in
history like :mod:`.models`: new fields get defaults. No ``from __future__ import
annotations``, as in :mod:`.activities`.
"""

from dataclasses import dataclass, field

LEDGER_WORKFLOW = "DailyBudgetLedger"
RESERVE_UPDATE = "reserve"
SETTLE_SIGNAL = "settle"
LEDGER_QUERY = "day"
CHARGE_LOST_UPDATE = "charge-lost"


@dataclass
class LedgerInput:
    """A day's ledger as it starts (or continues as new, carrying its book)."""

    key: str
    day: str
    spent_usd: float = 0.0
    reserved: dict[str, float] = field(default_factory=dict)
    settled: dict[str, float] = field(default_factory=dict)


@dataclass
class ReserveInput:
    request: str
    """The request's key (run, activity, attempt, ask): a resent reserve is answered alike."""
    reserve_usd: float
    limit_usd: float
    """The day's budget as the asking run knows it (``maxUSDPerDay``)."""


@dataclass
class ReserveResult:
    granted: bool
    spent_usd: float = 0.0
    """Spent and reserved on the day before this request."""
    reserve_usd: float = 0.0
    limit_usd: float = 0.0


@dataclass
class SettleInput:
    request: str
    cost_usd: float
    held_only: bool = False
    """Only for a request this ledger holds; one it does not is left alone. Sent by an
    attempt that takes over another's reply (whose request was charged as lost at a
    heartbeat's estimate) to every ledger that may hold it."""


@dataclass
class LedgerState:
    """Answer of :data:`LEDGER_QUERY`."""

    day: str
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    requests: int = 0


@dataclass
class ChargeLostInput:
    """Requests of attempts lost with their worker that are still reserved."""

    prefixes: list[str]
    """Key prefixes (run, activity, attempt): each request under one is settled at its
    reservation, its worst case."""
    named: dict[str, float] = field(default_factory=dict)
    """Requests a heartbeat named, settled at what it said they were billed."""


@dataclass
class ChargeLostResult:
    charged_usd: float = 0.0
    """What the requests settled here add to the day's spend."""
    named_usd: float = 0.0
    """The part of it for the requests the caller named."""
    requests: int = 0
    costs: dict[str, float] = field(default_factory=dict)
    """Every request under the lost attempts' prefixes, or named, that the ledger holds
    settled, by this update or before it, at what it was settled: the day's word on
    what they cost, which the run counts for those no heartbeat told it of. A ledger
    from before this field answers without it."""

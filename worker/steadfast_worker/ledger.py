"""``DailyBudgetLedger``: one agent's spend on one UTC day, granted call by call.

The daily budget is a limit only if every run asks one place before it pays:
this workflow is that place. LLM activities reserve each request's worst case
from it (an update, so the answer comes back before the request is sent) and
settle what the request cost afterwards (a signal, which the server keeps at once,
so a worker draining on SIGTERM still finishes its call); the decision is
:meth:`steadfast_contract.budget.DayBook.grant`, a pure function. Its id comes
from the agent and the date (:func:`steadfast_contract.budget.ledger_id`), so
renaming a topic, re-running one or restarting the operator all find the same
day, and it lives in Temporal, so nothing is lost with a process.

It times out an hour after its day ends (its start sets the execution timeout,
so closing it needs no worker: an agent scaled to zero is not woken for it; late
settles of calls that began before midnight still land) and continues as new
when its history grows long.

Deterministic code only, and it runs outside Temporal's workflow sandbox: every LLM
request of the agent wakes it (a reservation and a settle), so the sandbox's work
per activation was measured at about 4 ms of worker CPU per pipeline run, 5 % of
its throughput at zero model latency (side by side with a sandboxed ledger, the
load of ``bench/temporal_cost.py``). What the sandbox
would guard is small here: the handlers call the pure
:class:`~steadfast_contract.budget.DayBook`, which neither reads the clock nor
iterates an unordered set, and the module imports nothing with I/O (the import
contracts). ``tests/integration/test_ledger_continue_as_new.py`` replays the
ledger's own histories, continue-as-new included, on this code.
"""

from __future__ import annotations

from temporalio import workflow

from steadfast_contract import budget
from steadfast_contract.ledger import (
    CHARGE_LOST_UPDATE,
    LEDGER_QUERY,
    LEDGER_WORKFLOW,
    RESERVE_UPDATE,
    SETTLE_SIGNAL,
    ChargeLostInput,
    ChargeLostResult,
    LedgerInput,
    LedgerState,
    ReserveInput,
    ReserveResult,
    SettleInput,
)

#: Patch: a settle above what a request was settled at raises it (a request charged as
#: lost at a heartbeat's estimate, whose attempt went on and was billed in full).
SETTLE_RAISES = "settle-raises"


@workflow.defn(name=LEDGER_WORKFLOW, sandboxed=False)
class DailyBudgetLedger:
    @workflow.init
    def __init__(self, inp: LedgerInput) -> None:
        self._day = inp.day
        self._book = budget.DayBook(inp.spent_usd, dict(inp.reserved), dict(inp.settled))

    @workflow.query(name=LEDGER_QUERY)
    def state(self) -> LedgerState:
        book = self._book
        return LedgerState(
            self._day, book.spent_usd, book.committed_usd - book.spent_usd, len(book.settled)
        )

    @workflow.update(name=RESERVE_UPDATE)
    def reserve(self, inp: ReserveInput) -> ReserveResult:
        d = self._book.grant(inp.request, inp.reserve_usd, inp.limit_usd, self._day)
        return ReserveResult(d.fits, d.spent_usd, d.reserve_usd, d.limit_usd)

    @workflow.update(name=CHARGE_LOST_UPDATE)
    def charge_lost(self, inp: ChargeLostInput) -> ChargeLostResult:
        return self._book.charge_lost(inp.prefixes, inp.named)

    @workflow.signal(name=SETTLE_SIGNAL)
    def settle(self, inp: SettleInput) -> None:
        cost, book = max(inp.cost_usd, 0.0), self._book
        if inp.held_only and not book.holds(inp.request):
            return
        # Asked only when it changes the day: most ledgers never record the marker.
        raising = book.settled_below(inp.request, cost) and workflow.patched(SETTLE_RAISES)
        book.settle(inp.request, cost, raise_settled=raising)

    @workflow.run
    async def run(self, inp: LedgerInput) -> LedgerState:
        # No timer: the ledger ends by its execution timeout (the day's end and
        # the grace), which the server enforces with no worker running.
        await workflow.wait_condition(lambda: workflow.info().is_continue_as_new_suggested())
        await workflow.wait_condition(workflow.all_handlers_finished)
        book = self._book
        workflow.continue_as_new(
            LedgerInput(inp.key, self._day, book.spent_usd, book.reserved, book.settled)
        )

"""What an attempt lost with its worker spent, counted by the attempt that replaces it.

A worker killed mid-call leaves no account of what its attempt paid: the heartbeat
it last sent says what the request in flight had cost so far (and the SDK may have
held that heartbeat back), and the requests it settled before dying never reached
a heartbeat at all. The day's ledger knows each request it granted and what it was
settled at, so the next attempt asks it (a ``charge-lost`` update) and counts, as
the run's failed spend, every request of the lost attempts that nobody counted yet
and that the activity does not take from the report store. Apart from
:mod:`steadfast_worker.activities.base` so that the attempt wrapper stays readable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from temporalio import activity

from steadfast_contract.activities import RunBudget
from steadfast_contract.pricing import Usage
from steadfast_worker.activities import daybudget
from steadfast_worker.activities.heartbeat import Carried


async def count_lost(
    carried: Carried,
    attempt: int,
    run_budget: RunBudget | None,
    stored: Mapping[str, float],
) -> tuple[float, Usage]:
    """Count what the attempts lost with their worker since the last that ended
    spent, as failed spend, once. The ledger of each day since the activity was
    first scheduled (yesterday's too, if it began before midnight) settles each
    request they left reserved (the heartbeat's request at its word, a stored one
    at its stored cost, the others at their worst case) and says what every
    request of theirs was settled at; counted here are those the heartbeat state
    has not counted and the activity does not use from the store. A request may
    have been settled (and billed) by an attempt lost before any heartbeat told
    of it. Without the ledger's answer, the heartbeat's word. Returns what it
    counted, and the usage of the request the heartbeat named (for the metrics)."""
    usage, estimate, key, its_ledger = carried.forget_in_flight()
    # Named with nothing billed yet (no answer had begun), a request's cost is not
    # known: it goes at its worst case with the others.
    known = bool(key) and estimate > 0
    lost = range(carried.ended_attempt + 1, attempt)
    theirs = [daybudget.attempt_prefix(a) for a in lost]
    # A stored reply the lost attempts paid for, at its cost (it may still be
    # reserved: its worker died between storing it and settling it).
    stored_theirs = {k: cost for k, cost in stored.items() if k.startswith(tuple(theirs))}
    # A reply stored before its worker died was billed in full, whatever the heartbeat
    # had seen of it mid-stream: the day is never settled below that.
    billed = max(estimate, stored.get(key, 0.0))
    charged = named_usd = 0.0
    told = False  # a ledger answered for the heartbeat's request
    # A lost attempt may have reserved in yesterday's ledger, before midnight.
    for ledger in daybudget.lost_ledgers(run_budget, its_ledger):
        named = dict(stored_theirs)
        if known and ledger == its_ledger:
            named[key] = billed
        answer = await daybudget.charge_lost(ledger, theirs, named)
        if answer is None:
            continue
        # ``costs`` lists everything the ledger settled here: a ledger that
        # charged and listed nothing predates it. One that is gone (a day
        # closed an hour after it ended) lists nothing, and knows nothing.
        if answer.costs or not answer.charged_usd:
            told = told or key in answer.costs
            unseen = {
                k: cost
                for k, cost in answer.costs.items()
                if k not in carried.counted and k not in stored
            }
            charged += sum(unseen.values())
            named_usd += unseen.get(key, 0.0)
            carried.counted.update(unseen)
        else:  # a ledger from before it listed costs
            told = told or ledger == its_ledger
            charged += answer.charged_usd
            named_usd += answer.named_usd
    if known and not told:
        # No ledger answered for it (there was none, it did not answer, or it
        # closed with its day): the heartbeat's word, settled where it was
        # reserved if that ledger is still there.
        charged, named_usd = charged + estimate, named_usd + estimate
        carried.counted[key] = estimate
        if its_ledger:
            await daybudget.settle_day(its_ledger, key, billed)
    carried.failed_cost_usd += charged
    return charged, usage if named_usd else Usage()


async def stored_or_nothing(
    stored: Callable[[], Awaitable[Mapping[str, float]]] | None,
) -> Mapping[str, float]:
    """What ``stored`` says, or nothing if the store does not answer: the lost spend is
    counted now all the same (an error here would end this attempt as if it had), at
    worst with a stored reply counted twice, which overstates the run's spend."""
    if stored is None:
        return {}
    try:
        return await stored()
    except Exception as err:
        activity.logger.warning(
            "could not read what is stored (%s): a stored reply may be counted twice",
            type(err).__name__,
        )
        return {}

"""What an attempt makes of work another attempt of the same step stored: counted once.

A deep turn stores its reply, and a tool its result, before the activity reports,
so the attempt after one lost with its worker takes them from the report store
instead of paying again; and when two attempts are alive at once (Temporal gave up
on one whose worker was cut off from it, not dead), the one whose write came second
goes on with the stored one. What such an attempt reports, or counts as spend that
produced nothing, must count every paid request once: neither the request the lost
attempt's heartbeat already counted (at what it had billed so far), nor a reply an
earlier activity of the turn set aside and its failure counted. Pure functions over
the heartbeat state; :mod:`steadfast_worker.activities.deep` does the I/O.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from steadfast_contract.activities import LlmCall
from steadfast_contract.pricing import Usage
from steadfast_worker import transcript
from steadfast_worker.activities.heartbeat import Carried


def their_reply(reply: transcript.StoredReply, carried: Carried) -> transcript.StoredReply:
    """Another attempt's stored reply, as this attempt reports it. When this attempt
    already counted that attempt's request as lost spend (it started after Temporal
    gave up on it), only what the reply cost above that: the request was counted at
    what its last heartbeat said it had billed so far, and went on."""
    counted = carried.counted.get(reply.request) if reply.request else None
    if counted is None:
        return reply
    return replace(reply, usage={}, cost_usd=max(reply.cost_usd - counted, 0.0))


def reused(model: str, carried: Carried, stored: dict[str, Any]) -> LlmCall | None:
    """The cost of a stored tool result another attempt paid for (a search through the
    LLM), and what this activity counted as failed spend. A request this activity
    counted as lost already adds only what it cost above that."""
    paid = transcript.paid_result(stored)
    if paid is None:
        if not carried.failed_cost_usd:
            return None
        return LlmCall(model, Usage(), 0.0, carried.failed_cost_usd, carried.calls)
    calls = max(carried.calls, 1)  # the stored one was a call
    usage, cost = paid.usage, paid.cost_usd
    if paid.request in carried.counted:
        usage, cost = Usage(), max(cost - carried.counted[paid.request], 0.0)
    return LlmCall(model, usage, cost, carried.failed_cost_usd, calls)


#: In the heartbeat details: the set-aside reply's cost is in ``failed_cost_usd``.
SET_ASIDE_COUNTED = "set-aside"


def count_set_aside(
    carried: Carried, parts: list[tuple[int, str, str]], turn: int, mine: str
) -> bool:
    """Whether an earlier attempt set a reply of this turn aside. Its cost and call are
    counted here if one of this activity's attempts (their requests start with
    ``mine``) set it aside and the heartbeat that would have carried them did not reach
    Temporal (the SDK holds a heartbeat for most of the heartbeat timeout after the last
    one). One set aside by an earlier activity of the turn (scheduled again after a
    budget pause) was counted by the run when that activity failed with its spend."""
    aside = [body for t, part, body in parts if t == turn and part == transcript.SET_ASIDE]
    if aside and not carried.finished.get(SET_ASIDE_COUNTED):
        reply = transcript.StoredReply.loads(aside[0])
        if reply.request.startswith(mine):
            carried.failed_cost_usd += reply.cost_usd
            carried.calls += 1
        carried.finished[SET_ASIDE_COUNTED] = True
    return bool(aside)

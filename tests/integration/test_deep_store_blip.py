"""A deep run whose report store goes away while it holds something paid for.

A deep turn stores the model's reply, and a paid search (``anthropic-web-search``)
its result, before the activity reports back: the next attempt reads it from the
store instead of asking again. When the store refused that write (Postgres
restarting during a long turn), the attempt failed, but was not "lost", so nothing
counted the reply it had paid for; and since nothing was stored, the next attempt
asked, and paid, again. Now the attempt keeps trying the write for
``keep_seconds`` (30 s), so a short outage costs nothing twice; past that, the
reply is counted as spend that produced nothing before the attempt fails, so the
run's cost is still what the simulator billed.

The store is a throwaway Postgres, stopped and started for real.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from tests.integration.conftest import Harness, HarnessFactory
from tests.integration.test_deep_agent import billed_usd, deep, plan
from tests.support.pgserver import ThrowawayPostgres, throwaway_postgres

from steadfast_contract.models import Phase, ResearchResult

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(240)]

LLM_RETRIES = {"initialInterval": "1s", "backoffCoefficient": 1.0, "maximumAttempts": 0}
SEARCH_ASK = "summarise the most relevant findings in a few sentences"


def searching_through_the_model() -> dict[str, Any]:
    """A 3-turn deep agent whose searches are paid requests to the model."""
    return {
        "research": {
            "strategy": "deep",
            "maxTurns": 3,
            # The model's results name public domains: refused before any lookup.
            "tools": {"fetchPage": {"allowDomains": ["127.0.0.1"]}},
        },
        "model": {"maxTokens": 4000},
        "search": {"provider": "anthropic-web-search"},
    }


def mine(h: Harness, wf_id: str) -> list[dict[str, Any]]:
    return [e for e in h.sim.entries("llm") if e["key"].startswith(wf_id)]


def asked(entries: list[dict[str, Any]]) -> collections.Counter[str]:
    """How many times each request key was asked."""
    return collections.Counter(e["key"] for e in entries)


async def until_asked(h: Harness, wf_id: str, what: str, asks: Callable[[str], bool]) -> None:
    """Wait until the run has asked a request whose key ``asks`` picks (``what`` it is)."""
    for _ in range(600):
        if any(asks(e["key"]) for e in mine(h, wf_id)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} was never asked")


async def outage(pg: ThrowawayPostgres, seconds: float) -> None:
    await asyncio.to_thread(pg.stop)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(pg.start)


async def turn_two_during_an_outage(
    h: Harness, pg: ThrowawayPostgres, seconds: float
) -> tuple[str, ResearchResult]:
    """A 3-turn run whose store stops for ``seconds`` while turn 2 streams."""
    h.sim.set_faults(plan(3, chunk_delay_ms=150))
    handle = await h.start(f"store outage {uuid.uuid4().hex[:6]}")
    await until_asked(h, handle.id, "turn 2", lambda key: key.endswith("/turn2"))
    await outage(pg, seconds)
    h.sim.set_faults(plan(3))
    result = await asyncio.wait_for(handle.result(), 120)
    assert result.status.phase == Phase.COMPLETED, result.status.message
    return handle.id, result


async def test_a_reply_kept_through_a_short_outage_is_not_asked_again(
    harness: HarnessFactory,
) -> None:
    with throwaway_postgres() as pg:
        overrides = {**deep(3), "retryPolicies": {"llm": LLM_RETRIES}}
        async with harness(overrides, postgres_dsn=pg.dsn) as h:
            wf_id, result = await turn_two_during_an_outage(h, pg, 6)
            entries = mine(h, wf_id)
            turn2 = [k for k in asked(entries) if k.endswith("/turn2")]
            assert [asked(entries)[k] for k in turn2] == [1]
            assert max(asked(entries).values()) == 1
            assert result.status.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-6)


async def test_a_reply_the_store_never_took_is_counted(harness: HarnessFactory) -> None:
    with throwaway_postgres() as pg:
        overrides = {**deep(3), "retryPolicies": {"llm": LLM_RETRIES}}
        async with harness(overrides, postgres_dsn=pg.dsn) as h:
            h.activities.keep_seconds = 1.0  # the outage outlasts it
            wf_id, result = await turn_two_during_an_outage(h, pg, 6)
            entries = mine(h, wf_id)
            (turn2,) = [k for k in asked(entries) if k.endswith("/turn2")]
            # Asked again (nothing was stored), and both replies are in the run's cost.
            assert asked(entries)[turn2] >= 2
            billed = [e for e in entries if e["key"] == turn2 and e["billed"]]
            assert len(billed) >= 2
            assert result.status.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-6)


async def test_a_paid_search_kept_through_a_short_outage_is_not_asked_again(
    harness: HarnessFactory,
) -> None:
    overrides = {**searching_through_the_model(), "retryPolicies": {"search": LLM_RETRIES}}
    with throwaway_postgres() as pg:
        async with harness(overrides, postgres_dsn=pg.dsn) as h:
            slow_search = {"agent_turns": 3, "latency_ms": 1500, "match": SEARCH_ASK}
            h.sim.set_faults({**plan(3), "llm": slow_search})
            handle = await h.start(f"search outage {uuid.uuid4().hex[:6]}")
            await until_asked(h, handle.id, "a search", lambda key: "/turn" not in key)
            await outage(pg, 5)
            h.sim.set_faults(plan(3))
            result = await asyncio.wait_for(handle.result(), 120)
            assert result.status.phase == Phase.COMPLETED, result.status.message
            entries = mine(h, handle.id)
            searches = {k: n for k, n in asked(entries).items() if "/turn" not in k}
            assert searches
            assert set(searches.values()) == {1}
            # Search fees included: the simulator bills them in the usage.
            assert result.status.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-6)

"""A request settled in the day's ledger just before its worker died is still counted.

An LLM activity settles each request's cost in the day's ledger (a signal, which
the server keeps at once) and then reports to Temporal. A worker killed between
the two leaves a request that was billed and settled, and no heartbeat that told
the run of it: the SDK sends none for a reply that comes at once, and holds later
ones for most of the heartbeat timeout. The next attempt must count that spend all
the same (the ledger's ``charge-lost`` answer lists what each request of the lost
attempt was settled at), and must not count a second time what it takes from the
report store (a deep turn's stored reply, which the turn reports as its own cost).

The window is milliseconds wide, so no SIGKILL hits it reliably. Here each attempt
runs in the SDK's activity environment against the real dev server, the harness's
worker (which runs the ledger) and the simulator, and the second attempt is given
what Temporal would hold after the first was lost there: its attempt number, and
the details of its last heartbeat that reached the server, if one did (a test where
none was sent checks that). Costs are the simulator's billing, from its request log.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment
from tests.integration.conftest import PG_DSN_ENV, Harness, HarnessFactory
from tests.integration.test_budget_per_call import billed_usd

from steadfast_contract import activities as act
from steadfast_contract import budget, pricing
from steadfast_contract.ledger import LEDGER_QUERY, LedgerState
from steadfast_worker import transcript
from steadfast_worker.activities import daybudget

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]


def _run_budget(h: Harness) -> act.RunBudget:
    key = budget.ledger_key(h.config.namespace, h.config.agent, h.task_queue)
    return act.RunBudget(0.0, 1.0, 50.0, key)


def _attempt(
    h: Harness,
    wf_id: str,
    activity_id: str,
    attempt: int,
    sent: list[Any],
    reached: dict[str, Any] | None = None,
) -> ActivityEnvironment:
    """Attempt ``attempt`` of one activity of run ``wf_id``, as the worker would run it
    after the attempts before it (none reported; ``reached``, the details of the last
    of their heartbeats that reached Temporal, if any did), recording the heartbeats it
    asks for in ``sent``."""
    env = ActivityEnvironment(h.client)
    env.info = replace(
        env.info,
        workflow_id=wf_id,
        workflow_run_id="run-1",
        activity_id=activity_id,
        attempt=attempt,
        heartbeat_details=[reached] if reached else [],
        heartbeat_timeout=timedelta(seconds=3),
        task_queue=h.task_queue,
    )
    env.on_heartbeat = lambda *details: sent.append(details[0])
    return env


async def _day(h: Harness) -> LedgerState:
    """Today's ledger, as the harness's running worker answers its query."""
    ledger = h.client.get_workflow_handle(h.day_ledger_id())
    day: LedgerState = await ledger.query(LEDGER_QUERY, result_type=LedgerState)
    return day


def _entries(h: Harness, wf_id: str) -> list[dict[str, Any]]:
    return [e for e in h.sim.entries("llm") if e["key"].startswith(wf_id)]


async def test_a_query_call_settled_just_before_its_worker_died_is_counted(
    harness: HarnessFactory,
) -> None:
    async with harness() as h:  # its worker runs the day's ledger
        wf_id = f"settled-lost-{uuid.uuid4().hex[:8]}"
        inp = act.GenerateQueriesInput(
            "settled then lost", 3, h.config.model.name, budget=_run_budget(h)
        )
        sent: list[Any] = []
        await _attempt(h, wf_id, "1", 1, sent).run(h.activities.generate_queries, inp)
        assert sent == []  # the reply came at once: no heartbeat told of it
        (lost,) = _entries(h, wf_id)
        day_before = await _day(h)

        second = await _attempt(h, wf_id, "1", 2, sent).run(h.activities.generate_queries, inp)

        entries = _entries(h, wf_id)
        assert len(entries) == 2  # asked again: the first answer was lost with its worker
        # The lost call is the run's failed spend, at what the simulator billed for it
        # (the old code counted $0: the ledger had it settled, so it charged nothing).
        assert second.llm.failed_cost_usd == pytest.approx(billed_usd(h, [lost]), rel=1e-9)
        assert second.llm.cost_usd == pytest.approx(billed_usd(h, entries[1:]), rel=1e-9)
        # The day counted it once, when the lost attempt settled it.
        day = await _day(h)
        assert day.spent_usd - day_before.spent_usd == pytest.approx(billed_usd(h, entries[1:]))
        assert day.reserved_usd == pytest.approx(0.0)


@pytest.mark.parametrize("heartbeat_reached", [False, True])
async def test_a_deep_turn_lost_after_storing_its_reply_counts_it_once(
    harness: HarnessFactory, heartbeat_reached: bool
) -> None:
    """The turn heartbeats once its reply is stored (the SDK sends an attempt's first
    heartbeat at once); the worker may die before or after it reached Temporal."""
    async with harness() as h:
        wf_id = f"settled-stored-{uuid.uuid4().hex[:8]}"
        inp = _turn_input(h, wf_id, topic="settled, stored, then lost")
        sent: list[Any] = []
        first = await _attempt(h, wf_id, "turn-1", 1, sent).run(h.activities.deep_turn, inp)
        assert not first.reused
        assert len(sent) == 1
        assert sent[0]["calls"] == 1
        reached = sent[0] if heartbeat_reached else None

        second = await _attempt(h, wf_id, "turn-1", 2, [], reached).run(h.activities.deep_turn, inp)

        (billed,) = _entries(h, wf_id)  # not asked again: the stored reply is used
        assert second.reused
        assert second.llm.cost_usd == pytest.approx(billed_usd(h, [billed]), rel=1e-9)
        # Its cost is the turn's own, not the lost attempt's spend as well.
        assert second.llm.failed_cost_usd == 0.0
        day = await _day(h)
        assert day.reserved_usd == pytest.approx(0.0)


async def test_a_paid_search_stored_before_its_worker_died_is_counted_once(
    harness: HarnessFactory,
) -> None:
    """A deep run's ``web_search`` through the LLM (``anthropic-web-search``) stores its
    result; the attempt after a lost one returns that result, and its cost with it."""
    async with harness({"search": {"provider": "anthropic-web-search"}}) as h:
        wf_id = f"paid-search-{uuid.uuid4().hex[:8]}"
        call = act.ToolCall("toolu_1", act.TOOL_WEB_SEARCH, {"query": "sodium batteries"})
        inp = act.DeepToolInput(
            f"conv-{uuid.uuid4().hex[:8]}",
            1,
            call,
            model=h.config.model.name,
            budget=_run_budget(h),
        )
        sent: list[Any] = []
        first = await _attempt(h, wf_id, "tool-1", 1, sent).run(h.activities.deep_tool, inp)
        assert sent == []
        assert first.llm is not None

        second = await _attempt(h, wf_id, "tool-1", 2, sent).run(h.activities.deep_tool, inp)

        (billed,) = _entries(h, wf_id)  # not searched again: the stored result is used
        assert second.summary == first.summary
        # Its cost comes with it, once (the old code returned the result without it).
        assert second.llm is not None
        searches = billed["billed"]["server_tool_use"]["web_search_requests"]
        paid = billed_usd(h, [billed]) + searches * pricing.WEB_SEARCH_USD_PER_REQUEST
        assert searches == 1
        assert second.llm.cost_usd == pytest.approx(paid, rel=1e-9)
        assert second.llm.failed_cost_usd == 0.0
        day = await _day(h)
        assert day.reserved_usd == pytest.approx(0.0)


@pytest.mark.parametrize("heartbeats_reached", [0, 1, 2])
async def test_a_last_turn_lost_after_setting_a_reply_aside_counts_it_once(
    harness: HarnessFactory, heartbeats_reached: int
) -> None:
    """The last turn's reply called tools anyway: it is paid for, counted as failed spend
    (in the heartbeat state, with its key) and stored aside, and the report is asked for
    again. Lost after both, the next attempt takes both from the store, whichever of
    the two heartbeats (one after each stored reply) reached Temporal."""
    async with harness({"model": {"maxTokens": 4000}}) as h:
        h.sim.set_faults(
            {"llm": {"agent_turns": 20, "agent_finishes_when_asked": False}},
        )
        wf_id = f"set-aside-{uuid.uuid4().hex[:8]}"
        inp = act.DeepTurnInput(
            f"conv-{uuid.uuid4().hex[:8]}",
            "the model ignores the note",
            1,
            1,  # the last turn
            h.config.model.name,
            4000,
            budget=_run_budget(h),
            request_key=f"{wf_id}/turn-1",
        )
        sent: list[Any] = []
        first = await _attempt(h, wf_id, "turn-1", 1, sent).run(h.activities.deep_turn, inp)
        aside, report = _entries(h, wf_id)  # the reply that called tools, then the report
        assert report["key"].endswith("/ask1")
        assert first.llm.failed_cost_usd == pytest.approx(billed_usd(h, [aside]), rel=1e-9)
        assert len(sent) == 2

        reached = sent[heartbeats_reached - 1] if heartbeats_reached else None
        second = await _attempt(h, wf_id, "turn-1", 2, [], reached).run(h.activities.deep_turn, inp)

        assert len(_entries(h, wf_id)) == 2  # neither asked again
        assert second.reused
        assert second.report == first.report
        assert second.llm.cost_usd == pytest.approx(billed_usd(h, [report]), rel=1e-9)
        assert second.llm.failed_cost_usd == pytest.approx(billed_usd(h, [aside]), rel=1e-9)
        assert (await _day(h)).reserved_usd == pytest.approx(0.0)


async def test_a_re_ask_counted_in_a_heartbeat_that_reached_temporal_is_not_counted_again(
    harness: HarnessFactory,
) -> None:
    """The first ask answers an unparsable list: paid for, counted as failed spend with
    its key, and asked again. A heartbeat sent while the re-ask waits on the model
    (each answer comes 1.5 s late) carries both; the worker dies after the re-ask was
    settled. The next attempt counts the re-ask from the ledger, and the first ask only
    through that heartbeat, once."""
    async with harness() as h:
        h.sim.set_faults(
            {"llm": {"sequence": ["bad_json"], "scope": "service", "latency_ms": 1500}}
        )
        wf_id = f"re-ask-{uuid.uuid4().hex[:8]}"
        inp = act.GenerateQueriesInput(
            "counted once", 3, h.config.model.name, budget=_run_budget(h)
        )
        sent: list[Any] = []
        first = await _attempt(h, wf_id, "1", 1, sent).run(h.activities.generate_queries, inp)
        bad, good = _entries(h, wf_id)
        assert first.llm.failed_cost_usd == pytest.approx(billed_usd(h, [bad]), rel=1e-9)
        told = [d for d in sent if d.get("counted")]
        assert told
        reached = told[-1]  # the last heartbeat, which told of the first ask
        assert reached["failed_cost_usd"] == pytest.approx(billed_usd(h, [bad]), rel=1e-9)
        h.sim.set_faults({"llm": {"clear": True}})

        second = await _attempt(h, wf_id, "1", 2, [], reached).run(
            h.activities.generate_queries, inp
        )

        third = _entries(h, wf_id)[2:]
        assert len(third) == 1  # asked once more: the answer was lost with its worker
        lost = billed_usd(h, [bad]) + billed_usd(h, [good])
        assert second.llm.failed_cost_usd == pytest.approx(lost, rel=1e-9)
        assert second.llm.cost_usd == pytest.approx(billed_usd(h, third), rel=1e-9)


#: A stored turn's bill, and what a heartbeat sent mid-stream had seen of it.
FULL_USD, ESTIMATE_USD = 0.05, 0.01


async def _stored_turn(h: Harness, wf_id: str, conversation: str) -> str:
    """What attempt 1 of turn 1 left when its worker died after storing its reply and
    before settling it: the request reserved in the day's ledger, the reply (billed
    ``FULL_USD``) in the transcript. The request's key."""
    key = f"{wf_id}/run-1/turn-1/1/0"  # daybudget.request_key of attempt 1, first ask

    async def reserve() -> None:
        await daybudget.reserve_day(_run_budget(h), key, FULL_USD * 2, {})

    await _attempt(h, wf_id, "turn-1", 1, []).run(reserve)
    reply = transcript.StoredReply(
        [{"type": "text", "text": "# Report\n\nWhat was found.\n"}],
        "end_turn",
        {"input_tokens": 2000, "output_tokens": 3000},
        FULL_USD,
        key,
    )
    store = await h.store()
    try:
        assert await store.put_part(conversation, 1, transcript.ASSISTANT, reply.dumps())
    finally:
        await store.close()
    return key


def _turn_input(
    h: Harness, wf_id: str, conversation: str = "", topic: str = "stored, then lost"
) -> act.DeepTurnInput:
    """Turn 1 of 20 of run ``wf_id``'s conversation (a new one unless given)."""
    return act.DeepTurnInput(
        conversation or f"conv-{uuid.uuid4().hex[:8]}",
        topic,
        1,
        20,
        h.config.model.name,
        budget=_run_budget(h),
        request_key=f"{wf_id}/turn-1",
    )


async def test_a_turn_stored_then_lost_mid_settle_is_settled_in_the_day_at_its_bill(
    harness: HarnessFactory,
) -> None:
    """The last heartbeat that reached Temporal was sent mid-stream (the SDK holds later
    ones), so it named the request at what it had billed so far. The next attempt
    charges the lost request in the day's ledger: at the stored reply's bill, not at
    that estimate (the old code settled the day at the estimate, and the reuse never
    raised it: the day understated a paid call, and the agent could overspend it)."""
    async with harness() as h:
        wf_id = f"stored-unsettled-{uuid.uuid4().hex[:8]}"
        conversation = f"conv-{uuid.uuid4().hex[:8]}"
        key = await _stored_turn(h, wf_id, conversation)  # the day's first request
        mid_stream = {
            "calls": 0,
            "inflight_cost_usd": ESTIMATE_USD,
            "inflight_input_tokens": 2000,
            "inflight_request": key,
            "inflight_ledger": h.day_ledger_id(),
        }
        inp = _turn_input(h, wf_id, conversation)

        second = await _attempt(h, wf_id, "turn-1", 2, [], mid_stream).run(
            h.activities.deep_turn, inp
        )

        assert second.reused
        assert _entries(h, wf_id) == []  # the stored reply is used, nothing asked
        assert second.llm.cost_usd + second.llm.failed_cost_usd == pytest.approx(FULL_USD)
        day = await _day(h)
        assert day.spent_usd == pytest.approx(FULL_USD)
        assert day.reserved_usd == pytest.approx(0.0)


async def test_a_stored_reply_counted_as_lost_at_an_estimate_is_counted_once_at_its_bill(
    harness: HarnessFactory,
) -> None:
    """Attempt 2 charged attempt 1's request as lost at its heartbeat's estimate, then
    failed before storing anything; attempt 1, cut off from Temporal but alive, stored
    its reply and died before settling it. Attempt 3 takes that reply from the store:
    the run counts the request once, at its bill (the old code added the whole bill to
    the estimate already counted), and the day is raised from the estimate to the bill."""
    async with harness() as h:
        wf_id = f"counted-stored-{uuid.uuid4().hex[:8]}"
        conversation = f"conv-{uuid.uuid4().hex[:8]}"
        key = await _stored_turn(h, wf_id, conversation)  # the day's first request

        async def charged_at_the_estimate() -> None:
            await daybudget.charge_lost(h.day_ledger_id(), [], {key: ESTIMATE_USD})

        await _attempt(h, wf_id, "turn-1", 2, []).run(charged_at_the_estimate)
        after_two = {
            "failed_cost_usd": ESTIMATE_USD,
            "calls": 0,
            "ended_attempt": 2,
            "counted": {key: ESTIMATE_USD},
        }
        inp = _turn_input(h, wf_id, conversation)

        third = await _attempt(h, wf_id, "turn-1", 3, [], after_two).run(
            h.activities.deep_turn, inp
        )

        assert third.reused
        assert third.llm.failed_cost_usd == pytest.approx(ESTIMATE_USD)
        assert third.llm.cost_usd == pytest.approx(FULL_USD - ESTIMATE_USD)
        day = await _day(h)
        assert day.spent_usd == pytest.approx(FULL_USD)
        assert day.reserved_usd == pytest.approx(0.0)


@contextlib.asynccontextmanager
async def store_held(h: Harness, conversation: str) -> AsyncIterator[None]:
    """Another writer holds what the turn's reply would be stored in: SQLite's one
    write lock, or on Postgres an uncommitted row under the reply's key (the turn's
    insert waits on it; nothing else does). Released (rolled back) on the way out."""
    await h.activities.store()  # opened (its tables set up) before the writer comes
    dsn = h.env.get(PG_DSN_ENV, "")
    if not dsn:
        writer = sqlite3.connect(h.config.storage.sqlite_path, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            writer.execute("ROLLBACK")
            writer.close()
        return
    conn = await asyncpg.connect(dsn)
    try:
        held = conn.transaction()
        await held.start()
        await conn.execute(
            "INSERT INTO steadfast_transcripts (conversation, turn, part, body, created_at) "
            "VALUES ($1, 1, $2, '{}', '')",
            conversation,
            transcript.ASSISTANT,
        )
        try:
            yield
        finally:
            await held.rollback()
    finally:
        await conn.close()


async def test_a_turn_cancelled_while_storing_its_paid_reply_counts_it_once(
    harness: HarnessFactory, backend_dsn: str
) -> None:
    """The reply came in full and was billed; its store waited (another writer held
    the database), and the attempt was cancelled meanwhile (a drain's deadline, the
    run cancelled). The attempt ended, so the next is not one after a lost attempt.
    On Postgres the cancelled insert never lands: the next attempt asks again and must
    count the first reply as spend that produced nothing (the old code forgot it: two
    calls billed, one counted). On SQLite the write lands once the writer lets go: the
    next attempt uses it, and counts it once all the same."""
    async with harness(postgres_dsn=backend_dsn) as h:
        wf_id = f"cancel-store-{uuid.uuid4().hex[:8]}"
        inp = _turn_input(h, wf_id, topic="cancelled while storing")
        sent: list[Any] = []
        async with store_held(h, inp.conversation):
            first = _attempt(h, wf_id, "turn-1", 1, sent)
            running = asyncio.ensure_future(first.run(h.activities.deep_turn, inp))
            for _ in range(200):
                if any(e.get("outcome") == "served" for e in _entries(h, wf_id)):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # the reply is in; its store waits
            assert not running.done()
            first.cancel()
            with pytest.raises((asyncio.CancelledError, CancelledError)):
                await running
        reached = sent[-1]  # sent with the attempt's end

        second = await _attempt(h, wf_id, "turn-1", 2, [], reached).run(h.activities.deep_turn, inp)

        entries = _entries(h, wf_id)
        billed = billed_usd(h, entries)
        assert second.llm.cost_usd + second.llm.failed_cost_usd == pytest.approx(billed, rel=1e-9)
        if backend_dsn:
            assert len(entries) == 2  # asked again: nothing was stored
            assert second.llm.failed_cost_usd == pytest.approx(billed_usd(h, entries[:1]))
        else:
            assert len(entries) == 1  # the write landed late: its reply is used
            assert second.reused

"""Two live attempts of one deep turn: the run goes on with the reply the transcript keeps.

Temporal gives up on an attempt whose heartbeats stop reaching it and starts
another; when the first worker was only cut off from Temporal, not dead, both
attempts ask the model. The transcript keeps the reply stored first, and the next
turns are built from it; an attempt that returned its own reply instead handed the
workflow tool calls the transcript does not hold, so the next turn answered ids
its conversation never asked (a 400 after paying for the turn, and the run
failed). Here the other attempt is played by writing its reply to the store while
this one's request streams, as that attempt's worker would.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import pytest
from tests.integration.conftest import Harness, HarnessFactory
from tests.integration.test_budget_per_day import entries_of
from tests.integration.test_deep_agent import _doc, billed_usd, deep, plan, recorded
from tests.integration.test_deep_store_blip import SEARCH_ASK, searching_through_the_model
from tests.support.tcpforward import TCPForwarder

from steadfast_contract.activities import DEEP_TOOL
from steadfast_contract.models import Phase
from steadfast_contract.pricing import Usage
from steadfast_worker import transcript

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

THEIR_CALL = "toolu_theirs00000000000001"
#: When turn 2's first attempt is cut off from Temporal: about 5.5 s before its
#: 10.5 s stream ends (seven chunks 1.5 s apart; the topic is fixed, so the reply is).
#: The next attempt asks about 3.4 s after the cut (the server gives up on the first
#: about 3 s after its last heartbeat); the cut-off worker's SDK cancels the first,
#: for heartbeats it cannot send, about 7 s after the cut. The stream must end
#: between the two: with a topic whose reply ran to 12 s, a cut 7.5 s in, and so a
#: margin of 0.3 s, the first attempt ended before the next asked in 2 of 6 runs.
CUT_AFTER_S = 5.0


async def test_a_turn_whose_reply_another_attempt_stored_first_goes_on_with_that_one(
    harness: HarnessFactory, backend_dsn: str
) -> None:
    async with harness(deep(3), postgres_dsn=backend_dsn) as h:
        h.sim.set_faults(plan(3, chunk_delay_ms=400))  # room to write first
        handle = await h.start("two attempts of one turn")
        conversation = f"{handle.id}/{handle.first_execution_run_id}"
        for _ in range(600):
            if any(e["key"].endswith("/turn2") for e in h.sim.entries("llm")):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("turn 2 was never asked")
        theirs = transcript.StoredReply(
            [
                {"type": "text", "text": "One more search."},
                {
                    "type": "tool_use",
                    "id": THEIR_CALL,
                    "name": "web_search",
                    "input": {"query": "two attempts of one turn, again"},
                },
            ],
            "tool_use",
            {"input_tokens": 1200, "output_tokens": 40},
            0.0042,
            f"{handle.id}/turn2/the-other-attempt",
        )
        store = await h.store()
        try:
            await store.put_part(conversation, 2, transcript.ASSISTANT, theirs.dumps())
            # Stored first: this attempt's reply is still streaming.
            assert await store.get_part(conversation, 2, transcript.ASSISTANT) == theirs.dumps()
        finally:
            await store.close()
        result = await asyncio.wait_for(handle.result(), 120)
        st = result.status
        assert st.phase == Phase.COMPLETED, st.message
        # The workflow ran the call the transcript holds, and no other, for turn 2.
        ran = [
            (given["call"]["id"], result["is_error"])
            for given, result in await recorded(h, handle, DEEP_TOOL)
            if given["turn"] == 2
        ]
        assert ran == [(THEIR_CALL, False)]
        entries = [e for e in h.sim.entries("llm") if e["key"].startswith(handle.id)]
        # This attempt's own reply to turn 2 was paid for and is counted, unused, as is
        # the other attempt's, which the run went on with.
        assert st.cost_usd == pytest.approx(billed_usd(h, entries) + theirs.cost_usd, rel=1e-6)
        assert [e["key"].rsplit("/", 1)[1] for e in entries if e["billed"]] == [
            "turn1",
            "turn2",
            "turn3",
        ]


@pytest.mark.timeout(240)
async def test_a_cut_off_attempts_reply_taken_over_is_counted_at_its_bill(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path
) -> None:
    """The other attempt played by a real worker, cut off from Temporal (not from the
    model, nor the store) five seconds into turn 2. Temporal gives up on it when
    its heartbeats stop; the next attempt, on another worker, counts its request as lost
    at what its last heartbeat said (input, and the output streamed by then), and asks
    again. The cut-off attempt goes on, is billed in full and stores its reply first;
    the next attempt takes that reply over. Before, it reported it at $0, since its
    request was counted: the run and the day missed what the reply cost after that
    heartbeat."""
    overrides = {**deep(3), "budget": {"maxUSDPerRun": 1.0, "maxUSDPerDay": 50.0}}
    async with harness(overrides, start_worker=False) as h:
        # Turn 2 streams for 10.5 seconds: the cut-off attempt is still streaming
        # when the next one has counted it and asks again.
        h.sim.set_faults(plan(3, chunk_delay_ms=1500))
        with TCPForwarder(temporal_address) as fwd:
            proc = await h.spawn_worker(_doc(h, overrides), fwd.address, tmp_path / "w.json")
            try:
                handle = await h.start("cut off mid-turn")
                await _asked(h, handle.id, "/turn2", 1)
                await asyncio.sleep(CUT_AFTER_S)
                fwd.cut()
                async with h.worker():
                    await _asked(h, handle.id, "/turn2", 2)
                    h.sim.set_faults(plan(3, chunk_delay_ms=0))  # the asks from now on
                    result = await asyncio.wait_for(handle.result(), 120)
            finally:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
        st = result.status
        assert st.phase == Phase.COMPLETED, st.message
        mine = entries_of(h, handle.id)
        turn2 = [e for e in mine if e["key"].endswith("/turn2")]
        # Both attempts were served in full: the cut-off one was not killed.
        assert [e["outcome"] for e in turn2] == ["served", "served"]
        billed = billed_usd(h, mine)
        print(f"run ${st.cost_usd:.6f}; billed ${billed:.6f}")
        assert st.cost_usd == pytest.approx(billed, rel=1e-6)
        day = await h.day()
        assert day.spent_usd == pytest.approx(billed, rel=1e-6)
        assert day.reserved_usd == pytest.approx(0.0, abs=1e-9)


async def test_a_paid_search_whose_result_another_attempt_stored_first_goes_on_with_it(
    harness: HarnessFactory, backend_dsn: str
) -> None:
    """The same race for a paid search (``anthropic-web-search``): the other attempt's
    result, stored while this one's search is in flight, is the one the next turn's
    conversation holds. This attempt's search was paid for and produced nothing; the
    other's is counted as the step's (before, the run counted only its own, and the
    workflow's summary of the step was of a result the conversation does not hold)."""
    async with harness(searching_through_the_model(), postgres_dsn=backend_dsn) as h:
        slow_search = {"agent_turns": 3, "latency_ms": 1500, "match": SEARCH_ASK}
        h.sim.set_faults({**plan(3), "llm": slow_search})
        handle = await h.start(f"two attempts of one search {uuid.uuid4().hex[:6]}")
        await _asked(h, handle.id, SEARCH_ASK, 1, summary=True)
        conversation = f"{handle.id}/{handle.first_execution_run_id}"
        store = await h.store()
        try:
            reply = await store.get_part(conversation, 1, transcript.ASSISTANT)
            assert reply is not None
            searches = [
                c.id
                for c in transcript.tool_calls(transcript.StoredReply.loads(reply).content)
                if c.name == "web_search"
            ]
            assert searches
            for n, call_id in enumerate(searches):
                paid = transcript.Paid(f"{handle.id}/the-other-attempt/{n}", 0.0031, Usage(900, 60))
                body = transcript.result_body(THEIR_RESULT, False, paid)
                assert await store.put_part(conversation, 1, transcript.RESULT + call_id, body)
        finally:
            await store.close()
        h.sim.set_faults(plan(3))
        result = await asyncio.wait_for(handle.result(), 120)
        st = result.status
        assert st.phase == Phase.COMPLETED, st.message
        summaries = [
            result["summary"]
            for given, result in await recorded(h, handle, DEEP_TOOL)
            if given["turn"] == 1 and given["call"]["name"] == "web_search"
        ]
        assert summaries == [THEIR_RESULT] * len(searches)
        entries = [e for e in h.sim.entries("llm") if e["key"].startswith(handle.id)]
        ours = [e for e in entries if SEARCH_ASK in e["summary"]]
        assert len(ours) >= len(searches)  # each search was asked, and paid for
        their_usd = 0.0031 * len(searches)
        assert st.cost_usd == pytest.approx(billed_usd(h, entries) + their_usd, rel=1e-6)


THEIR_RESULT = '[{"title": "Theirs", "url": "http://127.0.0.1/theirs", "snippet": "x"}]'


async def _asked(h: Harness, wf_id: str, suffix: str, times: int, *, summary: bool = False) -> None:
    """Wait until the run asked ``times`` requests whose key ends with ``suffix`` (or,
    with ``summary``, whose prompt holds it)."""
    for _ in range(1200):
        asked = [e for e in h.sim.entries("llm") if e["key"].startswith(wf_id)]
        hits = [
            e for e in asked if (suffix in e["summary"] if summary else e["key"].endswith(suffix))
        ]
        if len(hits) >= times:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{suffix} was not asked {times} time(s)")


async def test_a_store_says_whether_it_stored_a_part(
    harness: HarnessFactory, backend_dsn: str
) -> None:
    """What the turn relies on, on both stores: the first write of a part stores it and
    says so; a second is refused and says so (were every write to say "refused", each
    reply would be taken for another attempt's)."""
    async with harness(postgres_dsn=backend_dsn, start_worker=False) as h:
        store = await h.store()
        try:
            key = f"research-probe-{uuid.uuid4().hex[:8]}/{uuid.uuid4()}"
            assert await store.put_part(key, 1, transcript.ASSISTANT, "first") is True
            assert await store.put_part(key, 1, transcript.ASSISTANT, "second") is False
            assert await store.get_part(key, 1, transcript.ASSISTANT) == "first"
        finally:
            await store.close()

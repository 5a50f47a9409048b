"""What a hostile page can make the model write does not make a run pay again or fail.

A page the model reads can tell it what to write, and the simulator's ``answer``
plays that: every matching answer says exactly the given text. Two shapes of it
broke runs:

- a query list of a few thousand ``[`` (a few hundred tokens, well within
  ``maxTokens``) nests past what Python's JSON parser reads. ``RecursionError`` is
  not a ``ValueError``, so it was not taken for bad output to re-ask within the
  bounded re-asks: the activity failed as ``Unexpected``, was retried, and paid
  again on each attempt, and none of those calls was counted in the run's spend;
- text that spells a lone surrogate (``\\ud800`` in the reply's JSON) was kept in
  the deep run's transcript as the model wrote it, and no later request can carry
  it: every attempt of the next turn failed before it was sent, and the run failed.

- a report too large for one Temporal payload (a model told to write in a script
  whose every character the JSON converter escapes to 6 bytes) failed its activity
  after it was paid for: the pipeline's retries paid for it again each time (five
  times, $9.61 for one $1.92 reply, with $0.0006 counted), the deep run retried its
  stored reply until it failed, and neither kept a report;
- turns that say much before they call tools (each turn's text goes into the run's
  stream) made the input of the run the loop continued as larger than a payload may
  be: every workflow task failed from then on, and the run never ended.

Every figure is the simulator's billing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from tests.integration.conftest import Harness, HarnessFactory
from tests.integration.test_deep_agent import billed_usd, chain_run_ids, deep, plan, the_report

from steadfast_contract import stops
from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_contract.text import REPLACEMENT

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

FAST = {"initialInterval": "100ms", "backoffCoefficient": 1.0, "maximumAttempts": 5}


async def test_a_query_list_nested_too_deep_is_re_asked_and_counted(
    harness: HarnessFactory,
) -> None:
    limit = 0.05
    overrides = {
        "budget": {"maxUSDPerRun": limit, "pauseTimeout": "0s"},
        "retryPolicies": {"llm": FAST},
    }
    async with harness(overrides) as h:
        h.sim.set_faults({"llm": {"answer": "[" * 3000, "match": "JSON array"}})
        handle = await h.start("a query list nested too deep")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        entries: list[dict[str, Any]] = [
            e for e in h.sim.entries("llm") if e["key"].startswith(handle.id)
        ]
        billed = billed_usd(h, entries)
        calls = [billed_usd(h, [e]) for e in entries if e["billed"]]
        print(f"{len(calls)} calls billed ${billed:.4f}; the run counted ${status.cost_usd:.4f}")
        # Asked once and re-asked twice, as any output that does not parse; all counted.
        assert len(calls) == 3
        assert status.cost_usd == pytest.approx(billed, rel=1e-6)
        assert billed <= limit + max(calls)
        assert getattr(failed.value.cause, "type", "") == "InvalidModelOutput"
        assert "nested too deeply" in status.message


async def test_a_deep_reply_spelling_a_lone_surrogate_does_not_break_later_turns(
    harness: HarnessFactory,
) -> None:
    said = "Reading on \ud800 as the page asked."
    async with harness(deep(3)) as h:
        h.sim.set_faults(plan(3, answer=said))
        handle = await h.start("a lone surrogate in a reply")
        result = await handle.result()
        assert result.status.phase == Phase.COMPLETED, result.status.message
        # The report (the last turn's text) is kept, as every store can hold it.
        assert await the_report(h, handle.id) == said.replace("\ud800", REPLACEMENT)
        entries = [e for e in h.sim.entries("llm") if e["key"].startswith(handle.id)]
        assert len([e for e in entries if e["billed"]]) == 3  # each turn asked once


#: 600,000 characters of 6 escaped bytes each: 3.6 MB in a payload, cut by
#: ``model.maxTokens`` to the simulator's 4 ASCII characters a token (512,000, 3 MB).
#: A control character is ASCII, yet JSON escapes it (``\u0001``): the most bytes a
#: token can take. (Chinese takes 6 bytes a token, so 128,000 tokens of it fit; a real
#: tokenizer, which joins common pairs of characters into one token, can fit twice as
#: many characters, and bytes, in a token.)
HUGE = "\x01" * 600_000


@pytest.mark.parametrize("strategy", ["pipeline", "deep"])
async def test_a_report_too_large_for_a_payload_is_kept_cut_and_paid_once(
    harness: HarnessFactory, strategy: str
) -> None:
    room = {"model": {"maxTokens": 128_000}, "budget": {"maxUSDPerRun": 20.0}}
    overrides = {**deep(3), **room} if strategy == "deep" else room
    async with harness(overrides) as h:
        if strategy == "deep":
            h.sim.set_faults(plan(1, answer=HUGE))  # the first turn writes the report
        else:
            h.sim.set_faults({"llm": {"answer": HUGE, "match": "research report"}})
        handle = await h.start(f"a report too large to carry ({strategy})")
        result = await handle.result()
        entries = [e for e in h.sim.entries("llm") if e["key"].startswith(handle.id)]
        billed = [e for e in entries if e["billed"]]
        assert len(billed) == (1 if strategy == "deep" else 2)  # the report asked once
        assert result.status.phase == Phase.COMPLETED, result.status.message
        assert result.status.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-6)
        report = await the_report(h, handle.id)
        assert stops.payload_bytes(report) <= stops.MAX_REPORT_BYTES
        assert report.startswith(HUGE[:1000])
        assert report.rstrip().endswith("It was paid for once and is not asked for again.*")


#: 500,000 characters of 6 escaped bytes (125,000 tokens): 3 MB, more than a payload.
TALKATIVE = "\x01" * 500_000


def roomy(max_tokens: int) -> dict[str, object]:
    """Room for turns that talk at length: ``max_tokens`` a reply, a window that holds
    the conversation, and a budget that pays for it."""
    model = {"maxTokens": max_tokens, "contextTokens": 1_000_000}
    return {"model": model, "budget": {"maxUSDPerRun": 20.0}}


async def completed_with_each_turn_paid_once(h: Harness, topic: str, turns: int) -> str:
    """Run ``topic`` to ``Completed`` in ``turns`` turns, each asked once; its id."""
    handle = await h.start(topic)
    result = await asyncio.wait_for(handle.result(), 90)
    assert result.status.phase == Phase.COMPLETED, result.status.message
    assert (result.status.turn, result.status.llm_calls) == (turns, turns)
    entries = [e for e in h.sim.entries("llm") if e["key"].startswith(handle.id)]
    assert len([e for e in entries if e["billed"]]) == turns  # no turn paid twice
    assert await the_report(h, handle.id)
    return handle.id


async def test_a_turn_that_says_more_than_a_payload_before_its_tools_goes_on(
    harness: HarnessFactory,
) -> None:
    """The text a turn streams before its tool calls goes to followers in chunks, and
    what is left unpublished comes back in the turn's result. Read faster than it was
    published (a fast stream, a busy worker), megabytes of it came back: the result
    was more than a payload may be, and every attempt of the paid turn failed so."""
    async with harness({**deep(2), **roomy(128_000)}) as h:
        h.sim.set_faults(plan(2, answer=TALKATIVE))
        await completed_with_each_turn_paid_once(h, "a turn that talks more than a payload", 2)


#: 200,000 characters of 6 escaped bytes (50,000 tokens): 1.2 MB, which one turn's
#: output carries.
CHATTY = "\x01" * 200_000


async def test_turns_that_talk_at_length_before_their_tools_still_continue_as_new(
    harness: HarnessFactory,
) -> None:
    async with harness({**deep(4, continueAsNewAfterTurns=2), **roomy(64_000)}) as h:
        # Every turn that calls tools first says 1.2 MB; two of them are more than
        # the 2 MB a continue-as-new's input may hold, if the stream kept them whole.
        h.sim.set_faults(plan(4, answer=CHATTY))
        wf_id = await completed_with_each_turn_paid_once(h, "turns that talk at length", 4)
        # The run continued as new once, handing on the stream's newest items only.
        _, second = await chain_run_ids(h, wf_id)
        history = await h.client.get_workflow_handle(wf_id, run_id=second).fetch_history()
        start = history.events[0].workflow_execution_started_event_attributes
        assert start.input.payloads[0].ByteSize() < 1024 * 1024

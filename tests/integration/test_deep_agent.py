"""The ``deep`` strategy against the real dev server and the simulator playing Claude.

Each test runs ``ResearchWorkflow`` with ``research.strategy: deep``: the
simulator's agent plan (``agent_turns``) decides how many turns the model takes,
its search results link to pages it serves itself, and its request log says how
often each logical call (``{workflow id}/{first run id}/turn{n}``) was served and
what it billed. A worker process SIGKILLed during call k is replaced; the run must
finish with every call that had finished served exactly once, and the spend it
reports as not re-paid must equal what the simulator billed for those calls.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path
from typing import Any

import anthropic
import pytest
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from tests.integration.conftest import Harness, HarnessFactory, base_config, merge_config

from steadfast_contract import pricing
from steadfast_contract.activities import DEEP_TOOL, DEEP_TURN
from steadfast_contract.models import (
    BUDGET_UPDATE,
    STATUS_QUERY,
    WORKFLOW_TASK_TIMEOUT,
    Phase,
    ResearchResult,
    RunStatus,
    SetBudgetInput,
)
from steadfast_worker import llm, transcript

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FAST_LLM = {"initialInterval": "100ms", "backoffCoefficient": 1.0, "maximumAttempts": 5}


def deep(max_turns: int = 20, **research: Any) -> dict[str, Any]:
    # Room for the whole report: a cut one loses its Sources section.
    return {
        "research": {"strategy": "deep", "maxTurns": max_turns, **research},
        "model": {"maxTokens": 4000},
    }


def plan(sim_turns: int, **llm_plan: Any) -> dict[str, Any]:
    return {"llm": {"agent_turns": sim_turns, **llm_plan}, "search": {"page_links": True}}


def turn_keys(h: Harness, wf_id: str) -> dict[int, str]:
    """Turn number -> the logical request key the simulator logged for it."""
    keys = {e["key"] for e in h.sim.entries("llm") if e["key"].startswith(wf_id + "/")}
    turns = (k for k in keys if "/turn" in k and "/ask" not in k)  # not a last turn's re-ask
    return {int(k.rsplit("/turn", 1)[1]): k for k in turns}


def prompt_tokens(billed: dict[str, Any]) -> int:
    """All of a request's prompt tokens: uncached, read from and written to the cache."""
    return int(
        billed.get("input_tokens", 0)
        + (billed.get("cache_read_input_tokens") or 0)
        + (billed.get("cache_creation_input_tokens") or 0)
    )


def billed_usd(h: Harness, entries: list[dict[str, Any]]) -> float:
    """What the simulator billed for these attempts, at the run's model price."""
    price = pricing.lookup(h.config.model.name)
    return sum(
        pricing.cost_usd(llm.usage_of(anthropic.types.Usage.model_validate(e["billed"])), price)
        for e in entries
        if e["billed"]
    )


def served_once(h: Harness, wf_id: str, turns: int) -> dict[int, str]:
    """Assert each of the run's ``turns`` calls was served exactly once; their keys."""
    keys = turn_keys(h, wf_id)
    assert sorted(keys) == list(range(1, turns + 1))
    served = h.sim.served("llm")
    assert {n: served.get(k, 0) for n, k in keys.items()} == dict.fromkeys(keys, 1)
    return keys


async def history_bytes(h: Harness, wf_id: str, run_id: str) -> tuple[int, int]:
    """(events, serialized bytes) of one run's history."""
    history = await h.client.get_workflow_handle(wf_id, run_id=run_id).fetch_history()
    return len(history.events), sum(event.ByteSize() for event in history.events)


async def chain_run_ids(h: Harness, wf_id: str) -> list[str]:
    """The run ids of a workflow chain, oldest first (continue-as-new links them)."""
    runs = []
    async for wf in h.client.list_workflows(f"WorkflowId = '{wf_id}'"):
        runs.append((wf.start_time, wf.run_id, wf.status))
    return [run_id for _, run_id, _ in sorted(runs)]


async def test_a_twenty_turn_run_completes_with_a_cited_report(harness: HarnessFactory) -> None:
    async with harness(deep(20)) as h:
        h.sim.set_faults(plan(20))
        handle = await h.start("deep research on grid batteries")
        result = await handle.result()
        st = result.status
        assert st.phase == Phase.COMPLETED, st.message
        assert (st.strategy, st.turn, st.max_turns, st.llm_calls) == ("deep", 20, 20, 20)
        assert st.tool_calls > 20
        assert st.findings > 0
        keys = served_once(h, handle.id, 20)
        usage = {e["key"]: e["billed"] for e in h.sim.entries("llm") if e["billed"]}
        reads = {n: usage[keys[n]].get("cache_read_input_tokens", 0) for n in keys}
        print("cache reads by turn:", reads)
        last_usd = billed_usd(h, [e for e in h.sim.entries("llm") if e["key"] == keys[20]])
        print(f"20 turns cost ${st.cost_usd:.4f}, the last ${last_usd:.4f}")
        # Turn n reads what turn n-1 wrote once the prefix passes the model's minimum,
        # the last turn too: it keeps tool_choice (which the cache keys the messages
        # on) and asks for the report in words. It writes nothing no turn would read.
        assert all(reads[n] > 0 for n in range(3, 21)), reads
        assert reads[20] == prompt_tokens(usage[keys[19]])
        assert (usage[keys[20]].get("cache_creation_input_tokens") or 0) == 0
        pages = [e for e in h.sim.entries("pages") if e["outcome"] == "served"]
        assert pages, "the agent fetched no page"
        report = await the_report(h, handle.id)
        cited = [e["path"] for e in pages if e["path"] in report]
        assert cited, (report, [e["path"] for e in pages])
        entries = [e for e in h.sim.entries("llm") if e["key"].startswith(handle.id)]
        assert st.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-9)
        assert st.avoided_usd == 0
        assert not st.interruptions
        events, size = await history_bytes(h, handle.id, handle.result_run_id or "")
        print(f"20 turns: {events} events, {size} bytes of history, {size // 20} per turn")
        # The last reply alone is a ~16 KB report; the conversation (~60 KB by turn 20,
        # resent every turn) must not be in history.
        assert size < 20 * 8_000, "the conversation travels through history"


async def test_parallel_tool_calls_run_at_once(harness: HarnessFactory) -> None:
    """Turn 1 asks for two searches: both are scheduled before either completes."""
    async with harness(deep(3)) as h:
        h.sim.set_faults({**plan(3), "search": {"page_links": True, "latency_ms": 300}})
        handle = await h.start("parallel tools")
        assert (await handle.result()).status.phase == Phase.COMPLETED
        history = await handle.fetch_history()
        order = []
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                order.append(("scheduled", attrs.activity_type.name))
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                order.append(("completed", ""))
        first_tool = order.index(("scheduled", "deep_tool"))
        assert order[first_tool + 1] == ("scheduled", "deep_tool"), order


async def test_max_turns_ends_with_a_report_from_a_turn_without_tools(
    harness: HarnessFactory,
) -> None:
    async with harness(deep(4)) as h:
        h.sim.set_faults(plan(20))  # the model would go on for 20 turns
        handle = await h.start("stopped at max turns")
        st = (await handle.result()).status
        assert st.phase == Phase.COMPLETED
        assert (st.turn, st.llm_calls) == (4, 4)
        served_once(h, handle.id, 4)
        report = await the_report(h, handle.id)
        assert "http://" in report


async def test_the_last_turn_reads_the_conversation_from_the_cache(
    harness: HarnessFactory,
) -> None:
    # With tool_choice none the last turn read only the tools and the system prompt
    # and paid for the whole conversation again.
    async with harness(deep(6)) as h:
        h.sim.set_faults(plan(20))  # the model would go on: only the note stops it
        handle = await h.start("the last turn is cached")
        st = (await handle.result()).status
        assert st.phase == Phase.COMPLETED, st.message
        assert (st.turn, st.llm_calls) == (6, 6)
        keys = served_once(h, handle.id, 6)
        usage = {e["key"]: e["billed"] for e in h.sim.entries("llm") if e["billed"]}
        last, before = usage[keys[6]], usage[keys[5]]
        assert last["cache_read_input_tokens"] == prompt_tokens(before)
        price = pricing.lookup(h.config.model.name)
        # What the last turn cost, by hand from the simulator's usage: cache reads at
        # the read price, the rest (the last results and the note) at the input price.
        by_hand = (
            last["cache_read_input_tokens"] * price.cache_read_per_mtok
            + last["input_tokens"] * price.input_per_mtok
            + last["output_tokens"] * price.output_per_mtok
        ) / 1e6
        assert billed_usd(h, [e for e in h.sim.entries("llm") if e["key"] == keys[6]]) == (
            pytest.approx(by_hand, rel=1e-9)
        )
        # Had it paid the cached part at the input price, it would have cost this much more.
        assert last["cache_read_input_tokens"] > last["input_tokens"]


async def test_a_last_turn_that_calls_tools_anyway_is_asked_again_without_them(
    harness: HarnessFactory,
) -> None:
    async with harness(deep(4)) as h:
        h.sim.set_faults(plan(20, agent_finishes_when_asked=False))
        handle = await h.start("the model ignores the note")
        st = (await handle.result()).status
        assert st.phase == Phase.COMPLETED, st.message
        # Four turns and the re-ask: five paid calls, the set-aside one as failed spend.
        assert (st.turn, st.llm_calls) == (4, 5)
        keys = served_once(h, handle.id, 4)
        again = keys[4] + "/ask1"
        assert h.sim.served("llm").get(again) == 1
        entries = [e for e in h.sim.entries("llm") if e["key"].startswith(handle.id)]
        assert st.cost_usd == pytest.approx(billed_usd(h, entries), rel=1e-9)
        set_aside = billed_usd(h, [e for e in entries if e["key"] == keys[4]])
        assert set_aside > 0
        assert st.finished_usd == pytest.approx(st.cost_usd - set_aside, rel=1e-9)
        report = await the_report(h, handle.id)
        assert "## Sources" in report


async def test_a_last_turn_lost_while_asked_again_does_not_pay_the_first_reply_again(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path
) -> None:
    overrides = {**deep(3), "retryPolicies": {"llm": FAST_LLM}}
    async with harness(overrides, start_worker=False) as h:
        deaf = plan(20, agent_finishes_when_asked=False)
        h.sim.set_faults({"llm": {**deaf["llm"], "chunk_delay_ms": 40}, "search": deaf["search"]})
        handle, result = await _kill_during_call(
            h,
            f"lost while asked again {uuid.uuid4().hex[:6]}",
            3,
            temporal_address,
            tmp_path / "w.json",
            _doc(h, overrides),
            request="/ask1",
            then=deaf,
        )
        st = result.status
        assert st.phase == Phase.COMPLETED, st.message
        keys = turn_keys(h, handle.id)
        entries = h.sim.entries("llm")
        # The reply set aside was asked for once: the next attempt asked without tools at once.
        assert [e["outcome"] for e in entries if e["key"] == keys[3]] == ["served"]
        again = [e for e in entries if e["key"] == keys[3] + "/ask1"]
        assert [e["outcome"] for e in again][-1] == "served"
        assert len(again) == 2  # the one lost with the worker, and the one that wrote it
        assert st.retries >= 1
        # The second request began within the heartbeat throttle window, so no
        # heartbeat named it: the next attempt charged what it reserved from the day.
        mine = [e for e in entries if e["key"].startswith(handle.id)]
        served = billed_usd(h, [e for e in mine if e["outcome"] == "served"])
        assert st.cost_usd >= billed_usd(h, mine) - 1e-9  # sums in another order
        print(f"run ${st.cost_usd:.6f}; served ${served:.6f}")
        day = await h.day()
        assert day.reserved_usd == 0
        assert day.spent_usd == pytest.approx(st.cost_usd, rel=1e-9)


async def test_a_saved_report_takes_its_transcript_with_it(
    harness: HarnessFactory, backend_dsn: str
) -> None:
    # The transcript (replies and every page read) was kept for ever; it is needed
    # only until the loop ends, and the report keeps the sources it cites.
    async with harness(deep(4), postgres_dsn=backend_dsn) as h:
        h.sim.set_faults(plan(3, latency_ms=300))  # time to see the transcript grow
        store = await h.store()
        other = f"another-run/{uuid.uuid4().hex}"
        try:
            await store.put_part(other, 1, transcript.ASSISTANT, "{}")
            handle = await h.start(f"the transcript goes with the save {uuid.uuid4().hex[:6]}")
            conversation = f"{handle.id}/{handle.first_execution_run_id}"
            seen = 0
            for _ in range(200):  # the loop writes the transcript as it goes
                seen = len(await store.get_parts(conversation, 10))
                if seen:
                    break
                await asyncio.sleep(0.05)
            assert seen > 0
            st = (await handle.result()).status
            assert st.phase == Phase.COMPLETED, st.message
            (report,) = await store.list_reports(handle.id)
            assert "## Sources" in report.markdown
            assert await store.get_parts(conversation, 10) == []
            # Another conversation's transcript is not touched.
            assert len(await store.get_parts(other, 10)) == 1
        finally:
            await store.close()


async def _kill_during_call(
    h: Harness,
    topic: str,
    k: int,
    temporal_address: str,
    config_path: Path,
    doc: dict[str, Any],
    *,
    request: str = "",
    then: dict[str, Any] | None = None,
    after_s: float = 0.2,
) -> tuple[WorkflowHandle[Any, ResearchResult], ResearchResult]:
    """Start ``topic`` on a worker process, SIGKILL it ``after_s`` into call ``k`` (its
    ``request`` suffix, such as ``/ask1``), and let this harness's worker finish the
    run under the simulator plan ``then`` (full speed by default)."""
    proc = await h.spawn_worker(doc, temporal_address, config_path)
    try:
        handle = await h.start(topic)
        wanted = f"/turn{k}{request}"
        for _ in range(1200):
            if any(e["key"].endswith(wanted) for e in h.sim.entries("llm")):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"call {k}{request} never started")
        await asyncio.sleep(after_s)
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
        # A plan keeps the fields it does not name: full speed must say so.
        h.sim.set_faults(then or plan(20, chunk_delay_ms=0))
        async with h.worker():
            result: ResearchResult = await handle.result()
        return handle, result
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def the_report(h: Harness, wf_id: str) -> str:
    """The markdown of the one report saved under ``wf_id``."""
    store = await h.store()
    try:
        (report,) = await store.list_reports(wf_id)
    finally:
        await store.close()
    return report.markdown


def _doc(h: Harness, overrides: dict[str, Any]) -> dict[str, Any]:
    doc = base_config(h.sim, h.task_queue, Path(h.config.storage.sqlite_path))
    doc["research"] = merge_config(doc["research"], overrides["research"])
    doc["model"]["maxTokens"] = overrides["model"]["maxTokens"]
    doc["budget"] = overrides.get("budget", doc["budget"])
    return doc


async def waited_on_a_dead_worker(h: Harness, wf_id: str) -> list[int]:
    """Ids of the workflow tasks that waited on the sticky queue of a dead worker until
    the server gave them to another (schedule-to-start time-outs). A task the worker
    held when it was killed times out start-to-close, which nothing can shorten."""
    history = await h.client.get_workflow_handle(wf_id).fetch_history()
    return [
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
        and e.workflow_task_timed_out_event_attributes.timeout_type
        == TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START
    ]


@pytest.mark.parametrize("k", [1, 5, 10, 17, 20])
async def test_a_worker_killed_during_call_k_resumes_at_k(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path, k: int
) -> None:
    # The day's ledger too: a kill must not leave it waiting on the dead worker.
    overrides = {**deep(20), "budget": {"maxUSDPerRun": 1.0, "maxUSDPerDay": 50.0}}
    async with harness(overrides, start_worker=False) as h:
        # Each reply streams slowly enough for the kill to land inside call k.
        h.sim.set_faults(plan(20, chunk_delay_ms=60))
        handle, result = await _kill_during_call(
            h,
            f"killed during call {k}",
            k,
            temporal_address,
            tmp_path / "w.json",
            _doc(h, overrides),
        )
        st = result.status
        assert st.phase == Phase.COMPLETED, st.message
        keys = served_once(h, handle.id, 20)
        finished = [e for e in h.sim.entries("llm") if e["key"] in {keys[n] for n in range(1, k)}]
        assert st.avoided_usd == pytest.approx(billed_usd(h, finished), rel=1e-9, abs=1e-12)
        assert st.calls_not_repeated == k - 1
        (stop,) = st.interruptions
        assert (stop.activity, stop.call, stop.finished_calls) == ("deep_turn", k, k - 1)
        # The retry told the server the dead worker is gone: the run's next workflow
        # task and the ledger's went to a live worker at once, not after the sticky
        # queue's time-out.
        assert await waited_on_a_dead_worker(h, handle.id) == []
        assert await waited_on_a_dead_worker(h, h.day_ledger_id()) == []
        print(f"killed during call {k} of 20: ${st.avoided_usd:.6f} not re-paid")


async def test_a_kill_after_continue_as_new_resumes_in_the_new_run(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path
) -> None:
    """Continue as new every 5 turns; the worker dies during call 8 (second run)."""
    overrides = deep(20, continueAsNewAfterTurns=5)
    async with harness(overrides, start_worker=False) as h:
        h.sim.set_faults(plan(20, chunk_delay_ms=60))
        handle, result = await _kill_during_call(
            h, "continued as new", 8, temporal_address, tmp_path / "w.json", _doc(h, overrides)
        )
        st = result.status
        assert st.phase == Phase.COMPLETED, st.message
        assert (st.turn, st.llm_calls) == (20, 20)
        keys = served_once(h, handle.id, 20)
        finished = [e for e in h.sim.entries("llm") if e["key"] in {keys[n] for n in range(1, 8)}]
        assert st.avoided_usd == pytest.approx(billed_usd(h, finished), rel=1e-9, abs=1e-12)
        runs = await chain_run_ids(h, handle.id)
        assert len(runs) == 4, runs  # turns 1-5, 6-10, 11-15, 16-20
        first = h.client.get_workflow_handle(handle.id, run_id=runs[0])
        assert (await first.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW
        for run in runs:  # each new run keeps the short workflow task timeout
            desc = await h.client.get_workflow_handle(handle.id, run_id=run).describe()
            config = desc.raw_description.execution_config
            assert config.default_workflow_task_timeout.ToTimedelta() == WORKFLOW_TASK_TIMEOUT
        sizes = [await history_bytes(h, handle.id, run) for run in runs]
        print("history per run (events, bytes):", sizes)
        # Each run holds five turns and the stream items of the run before it (for a
        # follower still reading them): bounded per run, not growing along the chain.
        assert max(size for _, size in sizes[:-1]) < 5 * 14_000


async def test_a_budget_pause_mid_loop_resumes_on_a_raise(harness: HarnessFactory) -> None:
    # A turn reserves up to ~$0.07 (4000 tokens out, the prompt at the 1-hour write
    # rate); spends ~$0.01: turns 1 and 2 fit, a later one does not.
    async with harness({**deep(8), "budget": {"maxUSDPerRun": 0.09}}) as h:
        h.sim.set_faults(plan(8))
        handle = await h.start("paused mid loop")
        for _ in range(600):
            st = await handle.query(STATUS_QUERY, result_type=RunStatus)
            if st.phase == Phase.AWAITING_BUDGET:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the run never paused")
        assert 1 < st.turn < 8, st.turn
        paused_at = st.turn
        await handle.execute_update(BUDGET_UPDATE, SetBudgetInput(max_usd_per_run=1.0))
        result = await handle.result()
        assert result.status.phase == Phase.COMPLETED
        served_once(h, handle.id, 8)
        print(f"paused before turn {paused_at} at ${st.cost_usd:.4f}")


async def recorded(h: Harness, handle: WorkflowHandle[Any, Any], activity: str) -> list[Any]:
    """(input, result) of each of the run's completed ``activity`` steps, as its
    history recorded them (the transcript goes with the saved report)."""
    inputs: dict[int, Any] = {}
    found = []
    async for event in h.client.get_workflow_handle(handle.id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == activity:
                inputs[event.event_id] = json.loads(attrs.input.payloads[0].data)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = event.activity_task_completed_event_attributes
            if done.scheduled_event_id in inputs:
                result = json.loads(done.result.payloads[0].data)
                found.append((inputs[done.scheduled_event_id], result))
    return found


async def _fetch_results(h: Harness, handle: WorkflowHandle[Any, Any]) -> list[dict[str, Any]]:
    """What the run's fetch_page calls answered (a summary of each text)."""
    return [
        {"is_error": result["is_error"], "text": result["summary"]}
        for given, result in await recorded(h, handle, DEEP_TOOL)
        if given["call"]["name"] == "fetch_page"
    ]


@pytest.mark.parametrize(
    ("fetch_rules", "refusal"),
    [
        ({"denyDomains": ["127.0.0.1", "localhost"]}, "is a denied domain"),
        # The simulator's pages are on loopback: with no host allowed private (the
        # default), search results that lead inside the network are not followed.
        ({"allowPrivateHosts": []}, "is not a public address"),
    ],
    ids=["denied-domain", "private-address"],
)
async def test_fetch_page_refuses_without_dialing(
    harness: HarnessFactory, fetch_rules: dict[str, list[str]], refusal: str
) -> None:
    async with harness(deep(6, tools={"fetchPage": fetch_rules})) as h:
        h.sim.set_faults(plan(6))
        handle = await h.start(f"nothing may be fetched {refusal[:12]}")
        st = (await handle.result()).status
        assert st.phase == Phase.COMPLETED
        assert st.tool_calls > 2
        assert h.sim.entries("pages") == []
        results = await _fetch_results(h, handle)
        assert results
        assert all(r["is_error"] and refusal in r["text"] for r in results), results


@pytest.mark.parametrize(
    ("page_plan", "refusal"),
    [
        ({"answer_bytes": 50_000_000}, "larger than"),
        ({"content_type": "image/png"}, "not text"),
    ],
    ids=["50MB", "image"],
)
async def test_fetch_page_refuses_a_huge_or_binary_page_and_the_run_goes_on(
    harness: HarnessFactory, page_plan: dict[str, Any], refusal: str
) -> None:
    async with harness(deep(6)) as h:
        h.sim.set_faults({**plan(6), "pages": page_plan})
        handle = await h.start(f"refused pages {refusal[:5]}")
        st = (await handle.result()).status
        assert st.phase == Phase.COMPLETED, st.message
        results = await _fetch_results(h, handle)
        assert results
        assert all(r["is_error"] and refusal in r["text"] for r in results), results
        served_once(h, handle.id, 6)


async def test_tool_inputs_that_break_the_schema_are_answered_with_errors(
    harness: HarnessFactory,
) -> None:
    """The model's first two turns call tools with broken inputs (untrusted output): no
    tool runs on them, each gets an error result, and the loop carries on to a report."""
    async with harness(deep(6)) as h:
        h.sim.set_faults({**plan(6, first_n=2, kind="bad_json")})
        handle = await h.start("broken tool inputs")
        st = (await handle.result()).status
        assert st.phase == Phase.COMPLETED, st.message
        served_once(h, handle.id, 6)
        # What the workflow answered the broken calls with, as turns 2 and 3 were given it.
        first = [
            answer
            for given, _ in await recorded(h, handle, DEEP_TURN)
            if given["turn"] <= 3
            for answer in given["answers"]
        ]
        assert first, "the broken calls got no answer"
        assert all(r["is_error"] and "invalid input" in r["text"] for r in first), first


async def test_a_reply_an_attempt_stored_before_it_was_lost_is_not_asked_again(
    harness: HarnessFactory,
) -> None:
    """The window between a finished call and Temporal hearing of it: an attempt that
    stored its reply and died leaves it in the transcript; the next attempt of that turn
    returns it instead of paying for the call again."""
    async with harness(deep(3), start_worker=False) as h:
        h.sim.set_faults(plan(3))
        handle = await h.start("answered before the worker died")
        conversation = f"{handle.id}/{handle.first_execution_run_id}"
        stored = transcript.StoredReply(
            [{"type": "text", "text": "# Report\n\nWritten by the lost attempt."}],
            "end_turn",
            {"input_tokens": 1000, "output_tokens": 20},
            0.0123,
        )
        store = await h.store()
        try:
            await store.put_part(conversation, 1, transcript.ASSISTANT, stored.dumps())
        finally:
            await store.close()
        async with h.worker():
            st = (await handle.result()).status
        assert st.phase == Phase.COMPLETED, st.message
        assert h.sim.entries("llm") == []  # nothing was asked
        assert (st.llm_calls, st.cost_usd) == (1, pytest.approx(0.0123))
        report = await the_report(h, handle.id)
        assert report == "# Report\n\nWritten by the lost attempt."

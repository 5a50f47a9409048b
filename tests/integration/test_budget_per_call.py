"""The run budget holds per LLM request, and a lost attempt's spend is counted.

docs/design.md §3 promises that a run's spend stays within ``maxUSDPerRun`` plus
one call, whatever the retry policy and faults, and that the spend of attempts
lost with a worker is counted. Every figure checked here comes from the
simulator's own billing (``billed`` in its request log: the whole usage of a
served answer, the input and the output actually sent of a broken one), never
from the workflow's accounting, which is what is under test.

Budgets, token limits and retry intervals are tiny so each case takes seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from tests.integration.conftest import Harness, HarnessFactory

from steadfast_contract import pricing
from steadfast_contract.models import (
    BUDGET_UPDATE,
    STATUS_QUERY,
    Phase,
    RunStatus,
    SetBudgetInput,
    SetBudgetResult,
)

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

FAST = {"initialInterval": "100ms", "backoffCoefficient": 1.0}
#: Longer than a budget-respecting run needs; an unbounded one is stopped here.
RUN_DEADLINE_S = 40.0


def _usage(raw: dict[str, Any]) -> pricing.Usage:
    return pricing.Usage(
        input_tokens=int(raw.get("input_tokens", 0)),
        output_tokens=int(raw.get("output_tokens", 0)),
        cache_read_tokens=int(raw.get("cache_read_input_tokens", 0)),
        cache_write_tokens=int(raw.get("cache_creation_input_tokens", 0)),
    )


def _entries(h: Harness, wf_id: str) -> list[dict[str, Any]]:
    return [e for e in h.sim.entries("llm") if e["key"].startswith(wf_id)]


def billed_usd(h: Harness, entries: list[dict[str, Any]]) -> float:
    """What the simulator billed for these attempts, at the run's model price."""
    price = pricing.lookup(h.config.model.name)
    return sum(pricing.cost_usd(_usage(e["billed"]), price) for e in entries if e["billed"])


def one_call_usd(h: Harness, entries: list[dict[str, Any]]) -> float:
    """The worst case of one call: ``maxTokens`` of output plus the largest input seen,
    every input token priced at the dearest input rate (a cache write)."""
    price = pricing.lookup(h.config.model.name)
    inputs = [_usage(e["usage"]) for e in entries if e["usage"]]
    largest_input = max(
        (u.input_tokens + u.cache_read_tokens + u.cache_write_tokens for u in inputs), default=0
    )
    dearest = max(price.input_per_mtok, price.cache_write_per_mtok)
    return (h.config.model.max_tokens * price.output_per_mtok + largest_input * dearest) / 1e6


async def _end(handle: WorkflowHandle[Any, Any]) -> tuple[str, str]:
    """(phase, failure type) once the run closed, or ("still running", "") at the deadline."""
    try:
        await asyncio.wait_for(handle.result(), RUN_DEADLINE_S)
    except TimeoutError:
        with contextlib.suppress(Exception):
            await handle.terminate("budget test deadline")
        return "still running", ""
    except WorkflowFailureError as err:
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        return status.phase.value, str(getattr(err.cause, "type", ""))
    status = await handle.query(STATUS_QUERY, result_type=RunStatus)
    return status.phase.value, ""


async def stopped_within_budget(
    h: Harness, handle: WorkflowHandle[Any, Any]
) -> tuple[list[dict[str, Any]], float]:
    """Wait for the run to end; it must have stopped BudgetExhausted with what the
    simulator billed within ``maxUSDPerRun`` plus one call. Returns (attempts, billed)."""
    phase, kind = await _end(handle)
    entries = _entries(h, handle.id)
    billed = billed_usd(h, entries)
    limit = h.config.budget.max_usd_per_run
    print(f"{len(entries)} LLM attempts billed ${billed:.4f} against ${limit}")
    assert billed <= limit + one_call_usd(h, entries), (phase, len(entries))
    assert (phase, kind) == (Phase.BUDGET_EXHAUSTED.value, "BudgetExhausted")
    return entries, billed


@pytest.mark.parametrize("maximum_attempts", [5, 0])
async def test_every_stream_cut_at_90_percent_stops_within_budget(
    harness: HarnessFactory, maximum_attempts: int
) -> None:
    overrides = {
        "model": {"maxTokens": 400},
        "budget": {"maxUSDPerRun": 0.02, "pauseTimeout": "0s"},
        "retryPolicies": {"llm": {**FAST, "maximumAttempts": maximum_attempts}},
    }
    async with harness(overrides) as h:
        h.sim.set_faults(
            {"llm": {"rates": {"stream_error": 1.0}, "match": "research report", "stream_cut": 0.9}}
        )
        handle = await h.start(f"every stream cut {maximum_attempts}")
        entries, billed = await stopped_within_budget(h, handle)
        # The cut-off reports were billed and the run stopped on them, not before.
        assert sum(1 for e in entries if e["fault"] == "stream_error") >= 1
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert 0 < status.cost_usd <= billed + 1e-9


async def test_a_budget_lowered_while_a_call_retries_stops_its_retries(
    harness: HarnessFactory,
) -> None:
    # The report's activity was scheduled under $0.15 and retries without end (every
    # stream cut); the run's budget is lowered under it. Its retries must stop at the
    # new limit (plus one call), not spend on to the one it was scheduled with.
    overrides = {
        "model": {"maxTokens": 400},
        "budget": {"maxUSDPerRun": 0.15, "pauseTimeout": "0s"},
        "retryPolicies": {"llm": {**FAST, "maximumAttempts": 0}},
    }
    async with harness(overrides) as h:
        h.sim.set_faults(
            {"llm": {"rates": {"stream_error": 1.0}, "match": "research report", "stream_cut": 0.9}}
        )
        handle = await h.start("a budget lowered mid report")
        for _ in range(600):
            if any(e["fault"] == "stream_error" for e in _entries(h, handle.id)):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no report stream was cut")
        spent = billed_usd(h, _entries(h, handle.id))
        lowered = round(spent + 0.01, 4)
        answer = await handle.execute_update(
            BUDGET_UPDATE, SetBudgetInput(max_usd_per_run=lowered), result_type=SetBudgetResult
        )
        assert answer.accepted, answer
        phase, kind = await _end(handle)
        entries = _entries(h, handle.id)
        billed = billed_usd(h, entries)
        print(f"lowered to ${lowered} after ${spent:.4f}: {len(entries)} attempts, ${billed:.4f}")
        assert (phase, kind) == (Phase.BUDGET_EXHAUSTED.value, "BudgetExhausted")
        assert billed <= lowered + one_call_usd(h, entries)
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.max_usd_per_run == lowered
        assert status.cost_usd == pytest.approx(billed, rel=1e-6)


async def test_bad_json_on_every_answer_and_529_on_the_last_reask_stays_within_budget(
    harness: HarnessFactory,
) -> None:
    overrides = {
        "model": {"maxTokens": 60},
        "budget": {"maxUSDPerRun": 0.004, "pauseTimeout": "0s"},
        "retryPolicies": {"llm": {**FAST, "maximumAttempts": 5}},
    }
    async with harness(overrides) as h:
        # Every query-generation request of the run, in order: two broken answers and
        # an overload on the last re-ask, so each activity attempt fails retryably.
        cycle = ["bad_json", "bad_json", "529"]
        h.sim.set_faults(
            {
                "llm": {
                    "sequence": cycle * 30,
                    "scope": "service",
                    "match": "JSON array",
                    "rates": {"bad_json": 1.0},
                    "retry_after": 0.1,
                }
            }
        )
        handle = await h.start("bad json and overload")
        _, billed = await stopped_within_budget(h, handle)
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.cost_usd == pytest.approx(billed)


@pytest.mark.parametrize("settle", [0.5, 3.5], ids=["within-first-heartbeat-window", "later"])
async def test_spend_of_a_report_attempt_lost_with_its_worker_is_counted(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path, settle: float
) -> None:
    async with harness(start_worker=False) as h:
        # The SDK sends an attempt's first heartbeat at once and later ones at most
        # every 80 % of the 3 s heartbeat timeout: the stream's first progress (0.25 s
        # in) is that first one, so a kill 0.5 s in finds it too.
        run = await h.killed_mid_report(
            f"spend lost with the worker {settle}",
            temporal_address,
            tmp_path / "worker.json",
            chunk_delay_ms=100,
            settle=settle,
        )
        handle, result = run.handle, run.result

        st = result.status
        assert st.phase == Phase.COMPLETED
        entries = _entries(h, handle.id)
        lost = [e for e in entries if e["outcome"] == "aborted"]
        assert len(lost) == 1, [(e["key"], e["outcome"]) for e in entries]
        lost_billed = billed_usd(h, lost)
        served = billed_usd(h, [e for e in entries if e["outcome"] == "served"])
        counted = st.cost_usd - served
        print(f"lost attempt billed ${lost_billed:.5f}, counted ${counted:.5f}")
        assert 0 < counted <= lost_billed + 1e-9
        model = h.config.model.name
        assert h.metric("steadfast_llm_retry_cost_usd_total", model=model) == pytest.approx(counted)


async def test_a_query_attempt_lost_with_its_worker_is_counted_at_its_worst_case(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path
) -> None:
    # The query call is not streamed, so no heartbeat can say what it was billed.
    # The simulator bills it only once its answer is sent; an API may bill a request
    # whose client left. The next attempt charges it at what it reserved from the
    # day, its worst case: before, it was counted nowhere and its reservation held
    # the day's budget until the day ended.
    async with harness(start_worker=False) as h:
        run = await h.killed_mid_report(
            "query call lost with the worker",
            temporal_address,
            tmp_path / "worker.json",
            chunk_delay_ms=400,
            settle=1.0,
            queries=True,
        )
        st = run.result.status
        assert st.phase == Phase.COMPLETED
        entries = _entries(h, run.handle.id)
        lost = [e for e in entries if e["outcome"] == "aborted"]
        assert len(lost) == 1, [(e["key"], e["outcome"]) for e in entries]
        assert "/ask" in lost[0]["key"]
        billed = billed_usd(h, entries)
        assert billed < st.cost_usd <= billed + one_call_usd(h, entries)
        model = h.config.model.name
        retried = h.metric("steadfast_llm_retry_cost_usd_total", model=model)
        assert retried == pytest.approx(st.cost_usd - billed)
        day = await h.day()
        assert day.reserved_usd == 0
        assert day.spent_usd == pytest.approx(st.cost_usd, rel=1e-9)
        # Each call that finished was served once: the queries once, the report once.
        served = [e["key"] for e in entries if e["outcome"] == "served"]
        assert len(served) == len(set(served)) == 2

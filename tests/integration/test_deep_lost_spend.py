"""What a deep turn lost with its worker was billed is counted: in the run and in the day.

A turn that calls tools streams no text, only the JSON of its tool calls. The
spend of a request killed part-way (all of its input, the output sent so far) is
known to the next attempt from the heartbeat details, so it is heartbeated from
``message_start`` on, whatever kind of block streams (a request lost before any
heartbeat named it is charged at its reservation: see the last turn's re-ask in
test_deep_agent and the lost query call in test_budget_per_call). Before,
the run's spend missed the lost input (the bulk of a long conversation's price),
so the run could go past ``maxUSDPerRun``, and the day's reservation for the
request stayed held until the day ended.

Every figure is the simulator's own billing, or the day ledger's own query.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from tests.integration.conftest import HarnessFactory
from tests.integration.test_budget_per_day import entries_of
from tests.integration.test_deep_agent import (
    _doc,
    _kill_during_call,
    billed_usd,
    deep,
    plan,
    prompt_tokens,
)

from steadfast_contract.models import Phase

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(300)]


@pytest.mark.parametrize("after_s", [0.2, 3.0], ids=["before-any-heartbeat", "after-a-heartbeat"])
async def test_a_tool_calling_turn_lost_mid_stream_is_counted(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path, after_s: float
) -> None:
    overrides = {**deep(6), "budget": {"maxUSDPerRun": 1.0, "maxUSDPerDay": 50.0}}
    async with harness(overrides, start_worker=False) as h:
        # Turn 3 calls tools; its reply streams for about four seconds.
        h.sim.set_faults(plan(6, chunk_delay_ms=150))
        handle, result = await _kill_during_call(
            h,
            f"lost tool turn {uuid.uuid4().hex[:6]}",
            3,
            temporal_address,
            tmp_path / "w.json",
            _doc(h, overrides),
            after_s=after_s,
        )
        st = result.status
        assert st.phase == Phase.COMPLETED, st.message
        mine = entries_of(h, handle.id)
        lost = [e for e in mine if e["outcome"] == "aborted"]
        assert len(lost) == 1, [e["outcome"] for e in mine]
        assert lost[0]["key"].endswith("/turn3")
        assert prompt_tokens(lost[0]["billed"]) > 1000  # the conversation so far
        billed = billed_usd(h, mine)
        served = billed_usd(h, [e for e in mine if e["outcome"] == "served"])
        print(f"run ${st.cost_usd:.6f}; billed ${billed:.6f}, of which served ${served:.6f}")
        # At what the last heartbeat said it was billed: its input, and the output
        # seen by then (an estimate, so only that part may be short).
        assert st.cost_usd >= served + billed_usd(h, [_input_only(lost[0])]) - 1e-9
        assert st.cost_usd <= billed + 1e-9
        day = await h.day()
        assert day.reserved_usd == 0  # the lost request's reservation was settled
        assert day.spent_usd == pytest.approx(st.cost_usd, rel=1e-9)


def _input_only(entry: dict[str, object]) -> dict[str, object]:
    billed = entry["billed"]
    assert isinstance(billed, dict)
    return {**entry, "billed": {**billed, "output_tokens": 0}}

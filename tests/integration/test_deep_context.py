"""A deep run asks for its report before its conversation outgrows the model.

Every turn sends the whole conversation; the real API refuses a request whose input
and ``max_tokens`` exceed the model's context window (400, never worth a retry). A
run that stopped only at ``maxTurns`` could pay for many turns and then be refused,
with no report. The simulator enforces a window here (its ``context_tokens`` plan),
the agent's ``model.contextTokens`` names the same window, and pages are long: the
run must end with a cited report, every request within the window.
"""

from __future__ import annotations

import pytest
from tests.integration.conftest import HarnessFactory
from tests.integration.test_deep_agent import deep, plan, the_report

from steadfast_contract.models import Phase

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WINDOW = 60_000
MAX_TOKENS = 4000


def _prompt_tokens(usage: dict[str, int]) -> int:
    """A request's whole input: what the cache served or wrote counts against the window."""
    return (
        usage["input_tokens"]
        + usage.get("cache_read_input_tokens", 0)
        + usage.get("cache_creation_input_tokens", 0)
    )


async def test_a_deep_run_writes_its_report_before_its_conversation_outgrows_the_model(
    harness: HarnessFactory,
) -> None:
    overrides = {**deep(20), "model": {"maxTokens": MAX_TOKENS, "contextTokens": WINDOW}}
    async with harness(overrides) as h:
        faults = plan(20)
        faults["llm"]["context_tokens"] = WINDOW
        faults["pages"] = {"answer_bytes": 40_000}  # each page read is 12,000 characters
        h.sim.set_faults(faults)
        handle = await h.start("a long read")
        st = (await handle.result()).status
        assert st.phase == Phase.COMPLETED, st.message
        assert 2 <= st.turn < 20, st.turn
        assert f"context window ({WINDOW} tokens)" in st.message
        assert f"turn {st.turn} of 20" in st.message
        asked = h.sim.entries("llm")
        assert [e["outcome"] for e in asked] == ["served"] * len(asked)
        biggest = max(_prompt_tokens(e["usage"]) for e in asked)
        print(f"turns {st.turn}; largest prompt {biggest} tokens of a {WINDOW}-token window")
        assert biggest + MAX_TOKENS <= WINDOW
        assert "## Sources" in await the_report(h, handle.id)

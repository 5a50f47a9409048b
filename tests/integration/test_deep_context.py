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
BIG_WINDOW = 150_000
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


async def test_a_conversation_the_model_counts_for_more_than_the_estimate_still_ends_in_a_report(
    harness: HarnessFactory,
) -> None:
    """The model here makes 2.5 tokens of every token the worker's rule of thumb counts
    (random strings, base64 and long numbers tokenize about so): a guard planned on the
    estimate alone sends a prompt the window cannot take, and the run ends without its
    report after paying for every turn before it. A window near Claude's, so the
    conversation grows for many turns before the guard must act."""
    overrides = {
        **deep(20),
        "model": {"maxTokens": MAX_TOKENS, "contextTokens": BIG_WINDOW},
        "budget": {"maxUSDPerRun": 5.0},  # room for twenty long turns at their density
    }
    async with harness(overrides) as h:
        faults = plan(20)
        faults["llm"].update(context_tokens=BIG_WINDOW, token_density=2.5)
        faults["pages"] = {"answer_bytes": 40_000}
        h.sim.set_faults(faults)
        handle = await h.start("a dense read")
        st = (await handle.result()).status
        asked = h.sim.entries("llm")
        assert [e["outcome"] for e in asked] == ["served"] * len(asked)
        assert st.phase == Phase.COMPLETED, st.message
        assert 2 <= st.turn < 20, st.turn
        assert f"context window ({BIG_WINDOW} tokens)" in st.message
        biggest = max(_prompt_tokens(e["usage"]) for e in asked)
        print(f"turns {st.turn}; largest prompt {biggest} tokens of a {BIG_WINDOW}-token window")
        assert biggest + MAX_TOKENS <= BIG_WINDOW
        assert "## Sources" in await the_report(h, handle.id)

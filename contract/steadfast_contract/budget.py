"""The per-run budget: may the next LLM call start?

docs/design.md §3 promises that a run never overspends by more than one call. The rule
that delivers it: before each call, reserve the most that call can cost (every
output token it may produce at ``max_tokens`` plus an estimate of its input) and
start it only if what was already spent plus that reservation fits the limit.
The only overspend left is an input estimate that was too low, bounded by one
call.

The workflow checks before each LLM activity; the activity checks again before
each request it sends (a re-ask, a retry), adding what it has spent itself, so
neither re-asks nor a retry policy (even ``maximumAttempts: 0``) escape the rule.

Pure functions only: the workflow makes this decision too, and it must replay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from steadfast_contract.models import Pricing
from steadfast_contract.pricing import WEB_SEARCH_USD_PER_REQUEST

#: Rule of thumb for English text; the simulator counts the same way.
CHARS_PER_TOKEN = 4
#: Role markers, system prompt framing and tool definitions the text alone misses.
OVERHEAD_TOKENS = 64


def estimate_tokens(text_chars: int) -> int:
    """Input tokens for a prompt of ``text_chars`` characters (rounded up, plus framing)."""
    return math.ceil(max(text_chars, 0) / CHARS_PER_TOKEN) + OVERHEAD_TOKENS


def reserve_usd(
    max_tokens: int, input_tokens: int, pricing: Pricing, *, web_searches: int = 0
) -> float:
    """The most one call may cost: ``max_tokens`` of output plus its input.

    Input is priced at the uncached rate, the highest an input token can cost
    apart from a cache write, which the workflow's prompts only ever make once.
    """
    return (
        max_tokens * pricing.output_per_mtok + input_tokens * pricing.input_per_mtok
    ) / 1_000_000.0 + web_searches * WEB_SEARCH_USD_PER_REQUEST


@dataclass(frozen=True)
class BudgetDecision:
    """Whether the next call may start, with the numbers that decided it."""

    fits: bool
    spent_usd: float
    reserve_usd: float
    limit_usd: float

    @property
    def message(self) -> str:
        verdict = "fits within" if self.fits else "would exceed"
        return (
            f"spent ${self.spent_usd:.4f} + next call up to ${self.reserve_usd:.4f} "
            f"{verdict} the run budget of ${self.limit_usd:.4f}"
        )

    def as_details(self) -> dict[str, float]:
        """The numbers, for the details of a ``BudgetExhausted`` failure."""
        return {
            "spent_usd": self.spent_usd,
            "reserve_usd": self.reserve_usd,
            "limit_usd": self.limit_usd,
        }

    @classmethod
    def refused(cls, details: Mapping[str, object]) -> BudgetDecision:
        """The refusal whose :meth:`as_details` these are (missing numbers read as 0)."""

        def number(key: str) -> float:
            value = details.get(key, 0.0)
            return float(value) if isinstance(value, int | float) else 0.0

        return cls(False, number("spent_usd"), number("reserve_usd"), number("limit_usd"))


def check(spent_usd: float, reserve: float, limit_usd: float) -> BudgetDecision:
    """Decide whether a call reserving ``reserve`` may start after ``spent_usd``."""
    # A hair of tolerance so a budget set to exactly N calls allows N calls
    # despite floating-point sums.
    fits = spent_usd + reserve <= limit_usd + 1e-12
    return BudgetDecision(fits, spent_usd, reserve, limit_usd)


def one_call_usd(max_tokens: int, output_per_mtok: float) -> float:
    """What one call's output can cost at most: ``max_tokens`` at the output price.

    The floor below which a per-run budget cannot pay for a single call, whatever
    its prompt; the operator refuses a spec whose ``maxUSDPerRun`` is under it.
    """
    return max_tokens * output_per_mtok / 1_000_000

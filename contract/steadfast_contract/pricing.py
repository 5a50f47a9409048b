"""What an LLM call costs: the Claude price table and the pure pricing function.

Cost is a first-class output of every run (the result, the ``status`` query, the
metrics and the budget all use it), so it is computed in one place from the
token counts the API reports. The table holds list prices in USD per million
tokens; a ResearchAgent's ``model.pricing`` overrides it for negotiated rates,
gateways or models newer than this table.

Everything here is deterministic and side-effect free: the workflow imports it to
decide budgets, and decisions made in a workflow must replay identically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from steadfast_contract.models import Pricing

#: List prices (USD per MTok): input, output, cache read (hits), cache write (5-minute).
#: Source: the vendor's public pricing page, checked November 2026.
PRICES: dict[str, Pricing] = {
    "claude-opus-5": Pricing(5.0, 25.0, 0.50, 6.25),
    "claude-opus-4-8": Pricing(5.0, 25.0, 0.50, 6.25),
    "claude-opus-4-7": Pricing(5.0, 25.0, 0.50, 6.25),
    "claude-opus-4-6": Pricing(5.0, 25.0, 0.50, 6.25),
    "claude-opus-4-5": Pricing(5.0, 25.0, 0.50, 6.25),
    "claude-opus-4-1": Pricing(15.0, 75.0, 1.50, 18.75),
    "claude-opus-4-0": Pricing(15.0, 75.0, 1.50, 18.75),
    "claude-sonnet-4-6": Pricing(3.0, 15.0, 0.30, 3.75),
    "claude-sonnet-4-5": Pricing(3.0, 15.0, 0.30, 3.75),
    "claude-sonnet-4-0": Pricing(3.0, 15.0, 0.30, 3.75),
    "claude-3-7-sonnet": Pricing(3.0, 15.0, 0.30, 3.75),
    "claude-haiku-4-5": Pricing(1.0, 5.0, 0.10, 1.25),
    "claude-3-5-haiku": Pricing(0.80, 4.0, 0.08, 1.0),
    "claude-3-haiku": Pricing(0.25, 1.25, 0.03, 0.30),
}

#: Older spellings that name the same price row.
ALIASES: dict[str, str] = {
    "claude-opus-4": "claude-opus-4-0",
    "claude-sonnet-4": "claude-sonnet-4-0",
}

#: Server-side web search is billed per search on top of tokens ($10 per 1,000).
WEB_SEARCH_USD_PER_REQUEST = 0.01

_SNAPSHOT = re.compile(r"-(\d{8}|latest)$")
_PER = 1_000_000.0


class UnknownModelError(KeyError):
    """No price is known for the model and no override was configured."""


@dataclass
class Usage:
    """Tokens one or more LLM calls consumed, as the Messages API reports them.

    ``input_tokens`` excludes cached tokens: the API reports cache reads and
    cache writes separately and bills each at its own rate.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    web_search_requests: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.web_search_requests + other.web_search_requests,
        )


def canonical_model(model: str) -> str:
    """Strip a dated snapshot or ``-latest`` suffix: ``claude-haiku-4-5-20251001`` -> table key."""
    base = _SNAPSHOT.sub("", model.strip().lower())
    return ALIASES.get(base, base)


def lookup(model: str, override: Pricing | None = None) -> Pricing:
    """The price of ``model``: the override when given, else the table.

    Raises :class:`UnknownModelError` rather than guessing, because a wrong
    price silently breaks the budget guarantee.
    """
    if override is not None:
        return override
    try:
        return PRICES[canonical_model(model)]
    except KeyError:
        raise UnknownModelError(
            f"no built-in price for model {model!r}; set model.pricing in the configuration"
        ) from None


def cost_usd(usage: Usage, pricing: Pricing) -> float:
    """USD cost of ``usage`` at ``pricing``."""
    return (
        usage.input_tokens * pricing.input_per_mtok
        + usage.output_tokens * pricing.output_per_mtok
        + usage.cache_read_tokens * pricing.cache_read_per_mtok
        + usage.cache_write_tokens * pricing.cache_write_per_mtok
    ) / _PER + usage.web_search_requests * WEB_SEARCH_USD_PER_REQUEST

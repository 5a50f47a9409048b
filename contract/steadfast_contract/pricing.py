"""What an LLM call costs: the Claude price table and the pure pricing function.

Cost is a first-class output of every run (the result, the ``status`` query, the
metrics and the budget all use it), so it is computed in one place from the
token counts the API reports. The table holds list prices in USD per million
tokens; a ResearchAgent's ``model.pricing`` overrides it for negotiated rates,
gateways or models newer than this table.

Everything here is deterministic and side-effect free: the workflow imports it to
decide budgets, and decisions made in a workflow must replay identically. No
``from __future__ import annotations``: :class:`Usage` crosses the workflow
boundary, and the payload converter resolves its field types on every conversion
(see :mod:`.models`).
"""

import re
from dataclasses import dataclass

from steadfast_contract.models import Pricing

#: List prices (USD per MTok): input, output, cache read (hits), cache write (5-minute).
#: The 1-hour cache write is left unset: it is twice the input price for every model.
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

#: A cache write that lives an hour costs this many input tokens.
ONE_HOUR_WRITE_FACTOR = 2.0
#: A cache write that lives 5 minutes costs this many input tokens.
FIVE_MINUTE_WRITE_FACTOR = 1.25
#: A token read from the cache costs this many input tokens.
CACHE_READ_FACTOR = 0.1

#: The shortest prefix (tokens) the prompt cache keeps, by model: a ``cache_control``
#: breakpoint whose prefix is shorter caches nothing, and no error says so.
#: Source: the Messages API's prompt-caching docs ("Cache limitations", as quoted in
#: anthropics/anthropic-sdk-python#1194), checked November 2026: 4096 for Opus 4.5/4.6 and
#: Haiku 4.5; 1024 for Sonnet 4.x/3.7 and Opus 4/4.1; 2048 for Haiku 3/3.5. Third-party
#: tables disagree for Opus 4.7 and later (512 to 4096); we take 4096, the largest, so the
#: simulator never promises a saving the real API would not give.
MIN_CACHEABLE_TOKENS: dict[str, int] = {
    "claude-opus-5": 4096,
    "claude-opus-4-8": 4096,
    "claude-opus-4-7": 4096,
    "claude-opus-4-6": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-1": 1024,
    "claude-opus-4-0": 1024,
    "claude-sonnet-4-6": 1024,
    "claude-sonnet-4-5": 1024,
    "claude-sonnet-4-0": 1024,
    "claude-3-7-sonnet": 1024,
    "claude-haiku-4-5": 4096,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
}
#: For a model the table does not know: the floor of most Sonnet and Opus models.
DEFAULT_MIN_CACHEABLE_TOKENS = 1024

#: Server-side web search is billed per search on top of tokens ($10 per 1,000).
WEB_SEARCH_USD_PER_REQUEST = 0.01
#: Input tokens reserved for one server-side search's results. The API bills the results
#: it reads back to the model as input tokens of the same request (five pages' worth,
#: often thousands of tokens; the text of a 4,000-character result is about 1,000, and its
#: encrypted form is longer) and caps them nowhere, so this is an allowance, not a bound;
#: a worker logs a warning for each search that read more.
WEB_SEARCH_RESULT_TOKENS = 20_000

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
    """Every token written to the cache, whatever its ``ttl``."""
    web_search_requests: int = 0
    cache_write_1h_tokens: int = 0
    """The part of ``cache_write_tokens`` written for an hour (the rest: 5 minutes)."""

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.web_search_requests + other.web_search_requests,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
        )

    @property
    def cache_write_5m_tokens(self) -> int:
        """The part of ``cache_write_tokens`` written for 5 minutes."""
        return max(self.cache_write_tokens - self.cache_write_1h_tokens, 0)


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


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix ``model``'s prompt cache keeps (:data:`MIN_CACHEABLE_TOKENS`)."""
    return MIN_CACHEABLE_TOKENS.get(canonical_model(model), DEFAULT_MIN_CACHEABLE_TOKENS)


def one_hour_write_per_mtok(pricing: Pricing) -> float:
    """The 1-hour cache-write rate: the configured one, else twice the input rate."""
    return pricing.cache_write_1h_per_mtok or pricing.input_per_mtok * ONE_HOUR_WRITE_FACTOR


def dearest_input_per_mtok(pricing: Pricing) -> float:
    """The most one input token can cost: plain input, or written to the cache for 5m or 1h."""
    return max(
        pricing.input_per_mtok, pricing.cache_write_per_mtok, one_hour_write_per_mtok(pricing)
    )


def web_search_usd(pricing: Pricing, result_tokens: int = WEB_SEARCH_RESULT_TOKENS) -> float:
    """What one server-side search is reserved at on top of its request: the fee, and
    ``result_tokens`` of results read as plain input (the request marks no cache)."""
    return WEB_SEARCH_USD_PER_REQUEST + result_tokens * pricing.input_per_mtok / _PER


def cost_usd(usage: Usage, pricing: Pricing) -> float:
    """USD cost of ``usage`` at ``pricing``: each kind of input token at its own rate."""
    return (
        usage.input_tokens * pricing.input_per_mtok
        + usage.output_tokens * pricing.output_per_mtok
        + usage.cache_read_tokens * pricing.cache_read_per_mtok
        + usage.cache_write_5m_tokens * pricing.cache_write_per_mtok
        + usage.cache_write_1h_tokens * one_hour_write_per_mtok(pricing)
    ) / _PER + usage.web_search_requests * WEB_SEARCH_USD_PER_REQUEST

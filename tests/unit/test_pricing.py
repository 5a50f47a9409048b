"""Pricing: the table, overrides, snapshot names and the cost of a usage."""

from __future__ import annotations

import pytest

from steadfast_contract.models import Pricing
from steadfast_contract.pricing import (
    PRICES,
    UnknownModelError,
    Usage,
    canonical_model,
    cost_usd,
    lookup,
    min_cacheable_tokens,
    one_hour_write_per_mtok,
)
from steadfast_contract.spec import PricingSpec

pytestmark = pytest.mark.unit


def test_sonnet_4_6_list_price() -> None:
    assert lookup("claude-sonnet-4-6") == Pricing(3.0, 15.0, 0.30, 3.75)


def test_current_families_are_priced() -> None:
    assert lookup("claude-haiku-4-5").output_per_mtok == 5.0
    assert lookup("claude-opus-4-6").input_per_mtok == 5.0
    assert lookup("claude-opus-4-1").input_per_mtok == 15.0


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("Claude-Sonnet-4-6", "claude-sonnet-4-6"),
        ("claude-sonnet-4", "claude-sonnet-4-0"),
    ],
)
def test_snapshot_and_alias_names_resolve(name: str, key: str) -> None:
    assert canonical_model(name) == key
    assert lookup(name) == PRICES[key]


def test_override_wins_and_unknown_model_fails_loudly() -> None:
    mine = Pricing(1.0, 2.0, 0.1, 1.25)
    assert lookup("claude-sonnet-4-6", mine) is mine
    assert lookup("my-gateway-model", mine) is mine
    with pytest.raises(UnknownModelError, match=r"model\.pricing"):
        lookup("my-gateway-model")


def test_cost_prices_each_token_type_separately() -> None:
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read_tokens=1_000_000,
        cache_write_tokens=1_000_000,
    )
    assert cost_usd(usage, lookup("claude-sonnet-4-6")) == pytest.approx(3 + 15 + 0.3 + 3.75)


def test_small_call_and_web_search_fee() -> None:
    usage = Usage(input_tokens=1200, output_tokens=800)
    assert cost_usd(usage, lookup("claude-haiku-4-5")) == pytest.approx(0.0012 + 0.004)
    searched = Usage(web_search_requests=3)
    assert cost_usd(searched, lookup("claude-haiku-4-5")) == pytest.approx(0.03)


def test_usage_adds_up() -> None:
    total = Usage(1, 2, 3, 4, 5, 1) + Usage(10, 20, 30, 40, 50, 20)
    assert total == Usage(11, 22, 33, 44, 55, 21)
    assert total.cache_write_5m_tokens == 23


def test_cache_reads_and_5_minute_and_1_hour_writes_are_priced_apart() -> None:
    # Sonnet 4.6: input $3, output $15, read $0.30, 5-minute write $3.75, 1-hour write $6.
    usage = Usage(
        input_tokens=1_000,
        output_tokens=500,
        cache_read_tokens=20_000,
        cache_write_tokens=3_000,  # every write ...
        cache_write_1h_tokens=1_000,  # ... of which this part for an hour
    )
    by_hand = (1_000 * 3 + 500 * 15 + 20_000 * 0.30 + 2_000 * 3.75 + 1_000 * 6) / 1e6
    assert by_hand == pytest.approx(0.030)
    assert cost_usd(usage, lookup("claude-sonnet-4-6")) == pytest.approx(by_hand)
    # Opus 4.6 ($5 input): a 1-hour write is $10, 5-minute $6.25, read $0.50.
    opus = Usage(cache_read_tokens=1_000_000, cache_write_tokens=2_000_000,
                 cache_write_1h_tokens=1_000_000)  # fmt: skip
    assert cost_usd(opus, lookup("claude-opus-4-6")) == pytest.approx(0.5 + 6.25 + 10.0)


def test_one_hour_write_rate_defaults_to_twice_input_unless_set() -> None:
    assert one_hour_write_per_mtok(Pricing(3.0, 15.0, 0.3, 3.75)) == 6.0
    assert one_hour_write_per_mtok(Pricing(3.0, 15.0, 0.3, 3.75, 5.0)) == 5.0
    only_hour = Usage(cache_write_tokens=1_000_000, cache_write_1h_tokens=1_000_000)
    assert cost_usd(only_hour, Pricing(1.0, 0, 0, 1.25)) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("model", "tokens"),
    [
        ("claude-sonnet-4-6", 1024),
        ("claude-sonnet-4-5-20250929", 1024),
        ("claude-opus-4-1", 1024),
        ("claude-opus-4-6", 4096),
        ("claude-haiku-4-5-20251001", 4096),
        ("claude-3-haiku", 2048),
        ("a-gateway-model", 1024),
    ],
)
def test_minimum_cacheable_length_by_model(model: str, tokens: int) -> None:
    assert min_cacheable_tokens(model) == tokens


def test_spec_pricing_carries_the_1_hour_write_rate() -> None:
    raw = {"inputPerMTok": 2.0, "outputPerMTok": 8.0, "cacheWrite1hPerMTok": 3.5}
    assert PricingSpec.model_validate(raw).to_pricing().cache_write_1h_per_mtok == 3.5
    unset = PricingSpec.model_validate({"inputPerMTok": 2.0, "outputPerMTok": 8.0})
    assert one_hour_write_per_mtok(unset.to_pricing()) == 4.0


def test_an_override_without_cache_rates_prices_the_cache_as_anthropic_does() -> None:
    """A deep run marks cache breakpoints whatever the override says. Rates left out
    were taken as $0: a late turn that read 60,000 tokens from the cache and wrote
    8,000 to it was counted at its few plain tokens, and the run and its day spent past
    their budgets. Left out (or 0), they are derived from the input price."""
    override = PricingSpec.model_validate({"inputPerMTok": 3.0, "outputPerMTok": 15.0})
    price = override.to_pricing()
    assert price.cache_read_per_mtok == pytest.approx(0.3)
    assert price.cache_write_per_mtok == pytest.approx(3.75)
    turn = Usage(
        input_tokens=500, output_tokens=1000, cache_read_tokens=60_000, cache_write_tokens=8_000
    )
    billed = (500 * 3.0 + 1000 * 15.0 + 60_000 * 0.3 + 8_000 * 3.75) / 1_000_000
    assert cost_usd(turn, price) == pytest.approx(billed)
    assert cost_usd(turn, price) == pytest.approx(cost_usd(turn, lookup("claude-sonnet-4-6")))
    given = {"inputPerMTok": 3.0, "outputPerMTok": 15.0, "cacheReadPerMTok": 0.5}
    assert PricingSpec.model_validate(given).to_pricing().cache_read_per_mtok == 0.5

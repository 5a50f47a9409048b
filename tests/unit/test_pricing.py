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
)

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
    total = Usage(1, 2, 3, 4, 5) + Usage(10, 20, 30, 40, 50)
    assert total == Usage(11, 22, 33, 44, 55)

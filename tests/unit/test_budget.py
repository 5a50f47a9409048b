"""Budget arithmetic: reserve the worst case of the next call, never overspend by more."""

from __future__ import annotations

import pytest

from steadfast_contract import budget
from steadfast_contract.models import Pricing
from steadfast_contract.pricing import Usage, cost_usd

pytestmark = pytest.mark.unit

SONNET = Pricing(3.0, 15.0, 0.30, 3.75)


def test_reserve_is_max_tokens_at_output_price_plus_input() -> None:
    assert budget.reserve_usd(2000, 0, SONNET) == pytest.approx(0.03)
    assert budget.reserve_usd(2000, 1000, SONNET) == pytest.approx(0.03 + 0.003)
    assert budget.reserve_usd(0, 0, SONNET, web_searches=2) == pytest.approx(0.02)


def test_estimate_rounds_up_and_adds_framing() -> None:
    assert budget.estimate_tokens(0) == budget.OVERHEAD_TOKENS
    assert budget.estimate_tokens(1) == 1 + budget.OVERHEAD_TOKENS
    assert budget.estimate_tokens(400) == 100 + budget.OVERHEAD_TOKENS


def test_check_fits_exactly_and_refuses_beyond() -> None:
    assert budget.check(0.0, 0.5, 0.5).fits
    assert budget.check(0.1 + 0.2, 0.2, 0.5).fits  # float sums do not steal a call
    refused = budget.check(0.31, 0.2, 0.5)
    assert not refused.fits
    assert "would exceed" in refused.message
    assert "$0.5000" in refused.message


def test_a_run_of_calls_never_overspends() -> None:
    """Simulate calls that each cost up to their reservation: the total stays within
    the limit, and the first refused call is the only one not made."""
    limit = 0.1
    spent = 0.0
    calls = 0
    while True:
        reserve = budget.reserve_usd(2000, budget.estimate_tokens(2000), SONNET)
        if not budget.check(spent, reserve, limit).fits:
            break
        actual = cost_usd(Usage(input_tokens=500, output_tokens=2000), SONNET)
        assert actual <= reserve
        spent += actual
        calls += 1
    assert calls == 3
    assert spent <= limit


def test_one_call_with_a_short_prompt_costs_output_and_input() -> None:
    # What the removed min_budget_usd computed, now spelled with reserve_usd: 2000 output
    # tokens at $15/MTok plus ceil(400 / 4) + 64 input tokens at $3/MTok.
    minimum = budget.reserve_usd(2000, budget.estimate_tokens(400), SONNET)
    assert minimum == pytest.approx(0.03 + 164 * 3.0 / 1_000_000)
    one_call = budget.reserve_usd(2000, budget.estimate_tokens(400), SONNET)
    assert budget.check(0.0, one_call, minimum).fits
    assert not budget.check(0.0, one_call, minimum - 1e-6).fits
    assert minimum > 0.03


@pytest.mark.parametrize(
    ("max_tokens", "price", "floor"),
    [(2000, 15.0, 0.03), (1000, 15.0, 0.015), (1500, 100.0, 0.15), (1, 0.0, 0.0)],
)
def test_one_call_floor_is_max_tokens_at_the_output_price(
    max_tokens: int, price: float, floor: float
) -> None:
    """The operator's floor for maxUSDPerRun: output only, whatever the prompt."""
    assert budget.one_call_usd(max_tokens, price) == pytest.approx(floor)


def test_a_refusal_travels_in_failure_details_and_back() -> None:
    refused = budget.check(0.018, 0.0066, 0.02)
    assert not refused.fits
    assert budget.BudgetDecision.refused(refused.as_details()) == refused
    # Details from an older worker (or none at all) still give a refusal to report.
    assert budget.BudgetDecision.refused({"spent_usd": "x"}).spent_usd == 0.0


def test_retries_checked_per_request_stay_within_the_budget_plus_one_call() -> None:
    # Each attempt of a request that is billed and then fails (a stream cut at 90 %)
    # is checked against the spend of the attempts before it, as the activity does.
    reserve, billed_per_attempt, limit = 0.0066, 0.006, 0.02
    spent = 0.0
    while budget.check(spent, reserve, limit).fits:
        spent += billed_per_attempt
    assert spent <= limit + reserve

"""Budget arithmetic: reserve the worst case of the next call, never overspend by more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from steadfast_contract import budget
from steadfast_contract.models import Pricing
from steadfast_contract.pricing import WEB_SEARCH_RESULT_TOKENS, Usage, cost_usd

pytestmark = pytest.mark.unit

SONNET = Pricing(3.0, 15.0, 0.30, 3.75)


def test_reserve_is_max_tokens_at_output_price_plus_input() -> None:
    assert budget.reserve_usd(2000, 0, SONNET) == pytest.approx(0.03)
    # Input at $6/MTok: the whole prompt may be written to the cache for an hour.
    assert budget.reserve_usd(2000, 1000, SONNET) == pytest.approx(0.03 + 0.006)
    # Each search: the $0.01 fee and 20,000 tokens of results at the plain input price.
    assert budget.reserve_usd(0, 0, SONNET, web_searches=2) == pytest.approx(2 * (0.01 + 0.06))
    # A run recorded before the results were reserved replays with the fee alone.
    assert budget.reserve_usd(0, 0, SONNET, web_searches=2, result_tokens=0) == pytest.approx(0.02)


def test_a_search_reserve_covers_what_its_results_are_billed_as_input() -> None:
    """The API bills a search's results as input of its request: a search that read
    the reserved results, wrote ``max_tokens`` and had the estimated prompt costs no
    more than it reserved; before, results were not reserved at all."""
    prompt = budget.estimate_tokens(400)
    billed = Usage(
        input_tokens=prompt + WEB_SEARCH_RESULT_TOKENS, output_tokens=1024, web_search_requests=1
    )
    reserve = budget.reserve_usd(1024, prompt, SONNET, web_searches=1)
    assert cost_usd(billed, SONNET) <= reserve + 1e-12
    assert cost_usd(billed, SONNET) > budget.reserve_usd(
        1024, prompt, SONNET, web_searches=1, result_tokens=0
    )


def test_reserve_bounds_a_prompt_written_to_the_cache_for_an_hour() -> None:
    prompt = 50_000
    whole_prompt_for_an_hour = Usage(
        output_tokens=2000, cache_write_tokens=prompt, cache_write_1h_tokens=prompt
    )
    whole_prompt_for_5_minutes = Usage(output_tokens=2000, cache_write_tokens=prompt)
    reserve = budget.reserve_usd(2000, prompt, SONNET)
    assert cost_usd(whole_prompt_for_an_hour, SONNET) == pytest.approx(reserve)
    assert cost_usd(whole_prompt_for_5_minutes, SONNET) < reserve
    dear_5m = Pricing(3.0, 15.0, 0.30, 9.0, 4.0)  # a gateway whose 5-minute write is dearest
    assert budget.reserve_usd(0, prompt, dear_5m) == pytest.approx(prompt * 9.0 / 1e6)


def test_estimate_rounds_up_and_adds_framing() -> None:
    assert budget.estimate_tokens(0) == budget.OVERHEAD_TOKENS
    assert budget.estimate_tokens(1) == 1 + budget.OVERHEAD_TOKENS
    assert budget.estimate_tokens(400) == 100 + budget.OVERHEAD_TOKENS


@pytest.mark.parametrize(
    ("text", "chars"),
    [
        ("", 0),
        ("plain English", 13),
        ("\u8a9e" * 10, 40),  # Chinese: a token a character
        ("\u043c\u0438\u0440", 12),  # Cyrillic: the same
        ("caf\u00e9", 3 + 4),  # an accent is a character of its own
        ("\U0001f4da", 8),  # outside the BMP: two UTF-16 units, about two tokens
        ("\ud800", 4),  # a lone surrogate is counted, never an error
        ("ab\u8a9ecd", 4 + 4),
    ],
)
def test_token_chars_counts_a_character_outside_ascii_as_a_token(text: str, chars: int) -> None:
    assert budget.token_chars(text) == chars


def test_a_prompt_in_chinese_is_estimated_at_four_times_its_length_in_english() -> None:
    english, chinese = "word" * 1000, "\u8a9e" * 4000
    assert budget.token_chars(english) == len(english)
    assert budget.estimate_tokens(budget.token_chars(chinese)) == 4000 + budget.OVERHEAD_TOKENS


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
    # tokens at $15/MTok plus ceil(400 / 4) + 64 input tokens at $6/MTok (a 1-hour write).
    minimum = budget.reserve_usd(2000, budget.estimate_tokens(400), SONNET)
    assert minimum == pytest.approx(0.03 + 164 * 6.0 / 1_000_000)
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


# --- pausing, raising and the day's ledger ------------------------------------------


@pytest.mark.parametrize(
    ("spent", "per_run", "per_day", "closed", "refused_with"),
    [
        (0.40, 1.0, None, "", ""),
        (0.40, None, 20.0, "", ""),
        (0.40, 0.40, None, "", ""),  # exactly what was spent: no further call, but honest
        (0.40, 0.39, None, "", "cannot go below"),
        (0.40, 0.0, None, "", "must be above 0"),
        (0.40, None, -1.0, "", "must be above 0"),
        (0.40, None, None, "", "give a new limit"),
        (0.40, 5.0, None, "Completed", "the run is over (phase Completed)"),
    ],
)
def test_which_new_limits_a_run_accepts(
    spent: float, per_run: float | None, per_day: float | None, closed: str, refused_with: str
) -> None:
    refusal = budget.raise_refusal(spent, per_run, per_day, closed)
    if refused_with:
        assert refused_with in refusal
    else:
        assert refusal == ""


def test_a_day_refusal_says_which_budget_and_day_and_survives_its_details() -> None:
    refused = budget.BudgetDecision(False, 4.99, 0.05, 5.0, budget.DAY, "2026-11-29")
    assert refused.message == (
        "the day spent $4.9900 + next call up to $0.0500 would exceed the daily budget "
        "of $5.0000 (2026-11-29, UTC)"
    )
    assert budget.BudgetDecision.refused(refused.as_details()) == refused
    # Details recorded before the scope existed read as the run's budget.
    old = budget.BudgetDecision.refused({"spent_usd": 1, "reserve_usd": 0.5, "limit_usd": 1.2})
    assert (old.scope, old.day) == (budget.RUN, "")


def test_the_day_grants_reservations_until_they_would_exceed_it() -> None:
    book = budget.DayBook()
    assert book.grant("a/1", 0.4, 1.0).fits
    assert book.grant("b/1", 0.4, 1.0).fits
    refused = book.grant("c/1", 0.4, 1.0, "2026-11-29")
    assert not refused.fits
    assert (refused.spent_usd, refused.scope, refused.day) == (0.8, "day", "2026-11-29")
    # A resent reserve of a granted request is granted again, without a second hold.
    assert book.grant("a/1", 0.4, 1.0).fits
    assert book.committed_usd == pytest.approx(0.8)
    # Settling frees what the call did not use; a resent settle changes nothing.
    book.settle("a/1", 0.1)
    book.settle("a/1", 0.1)
    assert (book.spent_usd, book.committed_usd) == (pytest.approx(0.1), pytest.approx(0.5))
    assert book.grant("c/1", 0.4, 1.0).fits
    assert not book.grant("d/1", 0.2, 1.0).fits


def test_the_book_remembers_the_newest_settled_requests_only() -> None:
    book = budget.DayBook()
    for n in range(budget.SETTLED_KEPT + 5):
        book.settle(f"r{n}", 0.001)
    assert len(book.settled) == budget.SETTLED_KEPT
    assert "r0" not in book.settled
    assert f"r{budget.SETTLED_KEPT + 4}" in book.settled
    assert book.spent_usd == pytest.approx((budget.SETTLED_KEPT + 5) * 0.001)


def test_requests_of_a_lost_attempt_are_charged_once() -> None:
    book = budget.DayBook()
    for key, usd in [("wf/r/5/1/0", 0.3), ("wf/r/5/1/1", 0.2), ("wf/r/5/2/0", 0.4)]:
        assert book.grant(key, usd, 10.0).fits
    book.grant("wf/r/5/10/0", 0.5, 10.0)  # attempt 10: not lost, though "1" starts it
    book.grant("other/r/5/1/0", 0.6, 10.0)  # another run's
    book.settle("wf/r/5/1/0", 0.05)  # the lost attempt settled its first request
    # Named by a heartbeat: at its word; the others lost: at their reservation; one
    # named but settled already (it was counted by whoever settled it): not again.
    named = {"wf/r/5/2/0": 0.07, "wf/r/5/1/0": 0.04}
    lost = book.charge_lost(["wf/r/5/1/", "wf/r/5/2/"], named)
    assert (lost.charged_usd, lost.named_usd, lost.requests) == (
        pytest.approx(0.27),
        pytest.approx(0.07),
        2,
    )
    assert book.settled["wf/r/5/1/1"] == pytest.approx(0.2)
    assert book.settled["wf/r/5/2/0"] == pytest.approx(0.07)
    assert book.settled["wf/r/5/1/0"] == pytest.approx(0.05)
    assert set(book.reserved) == {"wf/r/5/10/0", "other/r/5/1/0"}
    assert book.spent_usd == pytest.approx(0.05 + 0.27)
    # The answer lists every request of the lost attempts at what it was settled at,
    # the one the lost attempt settled itself too: no heartbeat may have told of it.
    everything = {"wf/r/5/1/0": 0.05, "wf/r/5/1/1": 0.2, "wf/r/5/2/0": 0.07}
    assert lost.costs == pytest.approx(everything)
    # A second charge (after an attempt lost again) settles nothing, and says the same.
    again = book.charge_lost(["wf/r/5/1/", "wf/r/5/2/"], named)
    assert (again.charged_usd, again.named_usd, again.requests) == (0.0, 0.0, 0)
    assert again.costs == pytest.approx(everything)
    assert book.spent_usd == pytest.approx(0.05 + 0.27)


def test_a_request_charged_at_its_estimate_is_raised_to_its_bill_never_lowered() -> None:
    """A request charged as lost at what its heartbeat said so far, whose attempt was cut
    off from Temporal but went on, is billed in full: the settle that says so raises the
    day. A resent settle, or a lower one (a request charged at its reservation, its
    worst case), changes nothing."""
    book = budget.DayBook()
    assert book.grant("wf/r/5/1/0", 0.5, 10.0).fits
    book.charge_lost(["wf/r/5/1/"], {"wf/r/5/1/0": 0.01})
    assert book.settled_below("wf/r/5/1/0", 0.03)
    book.settle("wf/r/5/1/0", 0.03)  # without the patch: kept as it was
    assert book.spent_usd == pytest.approx(0.01)
    book.settle("wf/r/5/1/0", 0.03, raise_settled=True)
    assert (book.settled["wf/r/5/1/0"], book.spent_usd) == (pytest.approx(0.03),) * 2
    for lower in (0.03, 0.02, 0.0):
        book.settle("wf/r/5/1/0", lower, raise_settled=True)
    assert book.spent_usd == pytest.approx(0.03)
    assert not book.settled_below("wf/r/5/1/0", 0.03)
    assert book.holds("wf/r/5/1/0")
    assert not book.holds("wf/r/5/2/0")


def test_many_runs_against_one_day_overspend_by_no_more_than_their_estimates() -> None:
    """Calls that each cost at most their reservation never take the day past its limit."""
    book, limit = budget.DayBook(), 5.0
    granted = 0
    for run in range(200):
        key = f"run-{run}/ask0"
        if book.grant(key, 0.3, limit).fits:
            granted += 1
            book.settle(key, 0.25)
    assert book.spent_usd <= limit
    # 19 calls settle $4.75; the 20th would need $0.30 of the $0.25 left.
    assert granted == 19


def test_days_and_ledger_ids() -> None:
    late = datetime(2026, 11, 29, 23, 59, 30, tzinfo=UTC)
    assert budget.day_of(late) == "2026-11-29"
    assert budget.seconds_to_next_day(late) == 30.0
    assert budget.day_of(datetime(2026, 11, 30, 1, 0, tzinfo=timezone(timedelta(hours=2)))) == (
        "2026-11-29"
    )
    # Agents whose dashed names would join alike keep apart.
    one = budget.ledger_key("a-b", "c", "q")
    other = budget.ledger_key("a", "b-c", "q")
    assert one != other
    assert budget.ledger_id(one, "2026-11-29") == "steadfast-budget/a-b/c@q/2026-11-29"


def test_days_spanned_reach_back_over_midnight_and_no_further() -> None:
    now = datetime(2026, 11, 30, 0, 0, 20, tzinfo=UTC)
    assert budget.days_spanned(datetime(2026, 11, 30, 0, 0, 1, tzinfo=UTC), now) == ["2026-11-30"]
    # Scheduled before midnight: yesterday's ledger may hold a lost attempt's request.
    assert budget.days_spanned(datetime(2026, 11, 29, 23, 59, 58, tzinfo=UTC), now) == [
        "2026-11-29",
        "2026-11-30",
    ]
    # The ledgers of older days are closed; so is any before a first schedule long ago.
    assert budget.days_spanned(datetime(2026, 11, 27, 12, 0, tzinfo=UTC), now) == [
        "2026-11-29",
        "2026-11-30",
    ]
    assert budget.days_spanned(datetime(1970, 1, 1, tzinfo=UTC), now) == [
        "2026-11-29",
        "2026-11-30",
    ]
    # A worker's clock behind the server's still charges today's ledger.
    assert budget.days_spanned(datetime(2026, 12, 1, tzinfo=UTC), now) == ["2026-11-30"]
    # Days are UTC days, whatever zone the times come in.
    east = timezone(timedelta(hours=2))
    assert budget.days_spanned(
        datetime(2026, 11, 30, 1, 30, tzinfo=east), datetime(2026, 11, 30, 2, 30, tzinfo=east)
    ) == ["2026-11-29", "2026-11-30"]

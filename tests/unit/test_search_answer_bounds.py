"""How much of a search answer a run keeps: the fields' cuts, then the answer's bytes."""

from __future__ import annotations

import pytest
from temporalio.converter import DataConverter

from steadfast_contract.activities import SearchResult, WebSearchOutput
from steadfast_worker.activities.search import (
    MAX_ANSWER_BYTES,
    fit_results,
    parse_results,
    result_bytes,
)

pytestmark = pytest.mark.unit

WIDE = "\u8a9e"  # 6 bytes in a payload (\u8a9e), 3 in UTF-8


def test_a_result_counts_its_fields_as_escaped_and_its_frame() -> None:
    # '{"snippet":,"title":,"url":},' is 29 bytes; '"ab"' 4, '"u"' 3, '""' 2.
    assert result_bytes(SearchResult("ab", "u", "")) == 38
    # Six bytes a character, and two quotes: 29 + 62 + 3 + 2.
    assert result_bytes(SearchResult(WIDE * 10, "u", "")) == 96


def test_results_are_kept_while_they_fit_in_order() -> None:
    small = [SearchResult("ab", f"u{i}", "") for i in range(5)]  # 39 bytes each
    assert fit_results(small, 39 * 3) == small[:3]
    assert fit_results(small, 39 * 3 - 1) == small[:2]
    assert fit_results(small, 39 * 5) == small
    assert fit_results(small, 10) == []


def test_fifty_full_ascii_results_are_all_kept() -> None:
    items = [
        {"title": "t" * 400, "url": f"https://e.test/{i}/" + "p" * 3000, "snippet": "s" * 2000}
        for i in range(50)
    ]
    results = parse_results({"results": items}, 50)
    assert len(results) == 50
    assert (len(results[0].title), len(results[0].url), len(results[0].snippet)) == (
        300,
        2048,
        1000,
    )


def test_fifty_wide_results_are_cut_to_what_fits_and_the_converter_agrees() -> None:
    items = [
        {"title": WIDE * 300, "url": f"https://{i}." + WIDE * 2100, "snippet": WIDE * 1000}
        for i in range(50)
    ]
    results = parse_results({"results": items}, 50)
    # A result: 29 + (300*6+2) + (2048 chars: 10 ASCII and 2038 wide, 10+2038*6+2) + (1000*6+2)
    # = 20,073 bytes; 262,144 // 20,073 = 13.
    assert result_bytes(results[0]) == 20_073
    assert len(results) == 13
    [payload] = DataConverter.default.payload_converter.to_payloads(
        [WebSearchOutput("q", results, "http")]
    )
    assert len(payload.data) <= MAX_ANSWER_BYTES + 200  # the output's own few fields
    assert len(payload.data) > 13 * 20_000

"""Text every store, mail and terminal can hold: NUL and lone surrogates replaced."""

from __future__ import annotations

import json

import pytest

from steadfast_contract.text import well_formed
from steadfast_worker.activities.queries import parse_queries
from steadfast_worker.activities.search import parse_results

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "held"),
    [
        ("plain, with \t tab and \n line", "plain, with \t tab and \n line"),
        ("NUL\x00inside", "NUL\ufffdinside"),
        ("lone high \ud800, lone low \udfff", "lone high \ufffd, lone low \ufffd"),
        ("a pair written out 😀 stays", "a pair written out 😀 stays"),
        (
            "\x1b[31m escape stays: that is the terminal's business",
            "\x1b[31m escape stays: that is the terminal's business",
        ),
    ],
)
def test_only_what_no_store_can_hold_is_replaced(raw: str, held: str) -> None:
    assert well_formed(raw) == held
    assert len(well_formed(raw)) == len(raw)  # one for one: budgets counted in characters hold
    well_formed(raw).encode("utf-8")  # UTF-8 takes it
    assert "\x00" not in well_formed(raw)


def test_search_results_and_model_queries_hold_no_nul_nor_lone_surrogate() -> None:
    """JSON spells them as escapes (``\\u0000``, ``\\ud800``): parsing brings them back,
    so the parsers of an index's results and of the model's queries replace them."""
    body = json.loads(
        '{"results": [{"title": "t\\u0000", "url": "https://e.test/\\ud800", '
        '"snippet": "s\\udfff"}]}'
    )
    (result,) = parse_results(body, 5)
    assert (result.title, result.url, result.snippet) == (
        "t\ufffd",
        "https://e.test/\ufffd",
        "s\ufffd",
    )
    assert parse_queries('["tides \\ud800", "a\\u0000b"]', 3) == ["tides \ufffd", "a\ufffdb"]


def test_a_query_list_nested_past_the_parsers_limit_is_bad_output() -> None:
    """Bad output to re-ask, as any that does not parse; not a crash to retry."""
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_queries("[" * 3000, 3)

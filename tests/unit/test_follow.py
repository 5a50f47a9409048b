"""``steadfast run --follow``: printing streamed report chunks across worker restarts."""

from __future__ import annotations

import pytest

from steadfast_cli.follow import Follower, held_cr
from steadfast_contract.models import ReportChunk

pytestmark = pytest.mark.unit


def test_chunks_print_in_order_once() -> None:
    f = Follower()
    assert f.feed(ReportChunk(1, 0, "Hello ")) == "Hello "
    assert f.feed(ReportChunk(1, 6, "world")) == "world"
    assert f.feed(ReportChunk(1, 6, "world")) == ""  # redelivered
    assert f.printed == 11


def test_overlapping_chunk_prints_only_the_new_part() -> None:
    f = Follower()
    f.feed(ReportChunk(1, 0, "abcdef"))
    assert f.feed(ReportChunk(1, 3, "defgh")) == "gh"


def test_a_retried_attempt_starts_over_with_a_notice() -> None:
    f = Follower()
    f.feed(ReportChunk(1, 0, "first try"))
    out = f.feed(ReportChunk(2, 0, "second"))
    assert "attempt 2" in out
    assert out.endswith("second")
    assert f.feed(ReportChunk(1, 9, "late")) == ""  # the abandoned attempt's leftovers
    assert f.printed == 6


def test_each_turn_of_a_deep_run_starts_its_own_paragraph() -> None:
    f = Follower()
    printed = [
        f.feed(ReportChunk(1, 0, "Searching two angles.", turn=1)),
        f.feed(ReportChunk(1, 0, "Reading a page.", turn=2)),
        f.feed(ReportChunk(1, 0, "Search", turn=1)),  # late: turn 1 is over
        f.feed(ReportChunk(1, 0, "# Report", turn=3)),
        f.feed(ReportChunk(2, 0, "# Report again", turn=3)),  # the last turn's worker lost
    ]
    assert printed[:4] == ["Searching two angles.", "\n\nReading a page.", "", "\n\n# Report"]
    assert printed[4].startswith("\n\n--- attempt 2")
    assert printed[4].endswith("# Report again")


def test_a_last_turn_asked_again_starts_its_text_over_with_a_notice() -> None:
    f = Follower()
    printed = [
        f.feed(ReportChunk(1, 0, "Fetching one more page.", turn=4)),
        f.feed(ReportChunk(1, 0, "# Report", turn=4, ask=1)),
        f.feed(ReportChunk(1, 23, " late", turn=4)),  # the set-aside reply's leftovers
        f.feed(ReportChunk(1, 8, " of tides", turn=4, ask=1)),
        f.feed(ReportChunk(2, 0, "# Report, again", turn=4)),  # then the worker was lost
    ]
    assert printed[0] == "Fetching one more page."
    assert printed[1].startswith("\n\n--- the model called tools on its last turn")
    assert printed[1].endswith("# Report")
    assert printed[2:4] == ["", " of tides"]
    assert printed[4].startswith("\n\n--- attempt 2")
    assert printed[4].endswith("# Report, again")


def test_a_crlf_split_across_two_chunks_prints_as_one_line_feed() -> None:
    """The carriage return of one chunk was printed shown (``␍``) before the next
    chunk's line feed (the audit); held back, the pair is the line feed
    ``steadfast report`` prints."""
    now, held = held_cr("", "line one\r")
    assert (now, held) == ("line one", "\r")
    now, held = held_cr(held, "\nline two")
    assert (now, held) == ("\r\nline two", "")
    # A carriage return the stream ends on, or one inside a chunk, is not held.
    assert held_cr("", "a\rb") == ("a\rb", "")
    assert held_cr("\r", "") == ("", "\r")

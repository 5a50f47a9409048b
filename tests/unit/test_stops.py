"""What a run makes of a reply that was cut short or refused (steadfast_contract.stops)."""

from __future__ import annotations

import pytest

from steadfast_contract import errortypes, stops

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("reason", "refused", "cut"),
    [
        ("end_turn", False, False),
        ("tool_use", False, False),
        ("stop_sequence", False, False),
        ("pause_turn", False, False),
        ("max_tokens", False, True),
        ("model_context_window_exceeded", False, True),
        ("refusal", True, False),
        ("", False, False),
        (None, False, False),
    ],
)
def test_each_stop_reason_is_judged(reason: str | None, refused: bool, cut: bool) -> None:
    assert stops.is_refusal(reason) is refused
    assert stops.is_cut_short(reason) is cut


def test_a_refusal_is_never_retried() -> None:
    assert errortypes.MODEL_REFUSED in errortypes.NON_RETRYABLE_TYPES


@pytest.mark.parametrize(
    ("category", "explanation", "said"),
    [
        ("cyber", "Declined:  could\nenable harm.", "category cyber: Declined: could enable harm."),
        (None, "Declined.", "no category given: Declined."),
        ("bio", None, "category bio"),
        (None, None, "no category given"),
        (None, "   ", "no category given"),
    ],
)
def test_a_refusal_says_what_the_api_said(
    category: str | None, explanation: str | None, said: str
) -> None:
    assert stops.refusal_reason(category, explanation) == said


def test_a_long_explanation_is_bounded() -> None:
    said = stops.refusal_reason("cyber", "x" * 10_000)
    assert len(said) == len("category cyber: ") + stops.MAX_EXPLANATION_CHARS


def test_the_refusal_message_names_the_step_and_why_it_is_final() -> None:
    message = stops.refusal_message("to write the report", "category cyber: Declined.")
    assert message.startswith("the model declined to write the report (category cyber: Declined.)")
    assert "not retried" in message


def test_a_cut_report_names_the_setting_to_raise() -> None:
    note = stops.cut_note("max_tokens", 512)
    assert note.startswith("\n\n---\n")  # after the report's last line, set apart
    assert "model.maxTokens (512 tokens)" in note
    assert "context window" in stops.cut_note("model_context_window_exceeded", 512)
    message = stops.cut_message("max_tokens", 512)
    assert message.startswith("report saved, cut short: ")
    assert "512" in message
    assert "raise model.maxTokens" in message


def test_a_call_cut_off_is_answered_with_why() -> None:
    said = stops.cut_call("invalid input for web_search: query must be non-empty strings", 300)
    assert said.startswith("invalid input for web_search")
    assert "cut off at model.maxTokens, 300 tokens" in said
    assert "it was not run" in said


def test_an_unfinished_report_lists_what_was_gathered() -> None:
    report = stops.unfinished_report(
        "Grid batteries",
        "the model declined to go on at turn 4",
        [("Storage grew 40%.", "https://a.example/1"), ("  ", ""), ("No source", "")],
        "Findings recorded",
    )
    assert report.splitlines() == [
        "# Grid batteries",
        "",
        "*Unfinished: the model declined to go on at turn 4. What the run gathered before "
        "that follows; the model wrote no report.*",
        "",
        "## Findings recorded",
        "",
        "1. Storage grew 40%. (https://a.example/1)",
        "2. No source",
    ]


def test_nothing_gathered_is_no_report() -> None:
    assert stops.unfinished_report("t", "why", [], "Findings recorded") == ""
    assert stops.unfinished_report("t", "why", [(" ", " ")], "Findings recorded") == ""


def test_a_report_that_fits_a_payload_is_kept_whole() -> None:
    text = "# Report\n\n" + "word " * 1000
    assert stops.fit_report(text, limit=len(text) * 2) == text


@pytest.mark.parametrize(
    ("char", "escaped_bytes"), [("a", 1), ("\n", 2), ("\u8a9e", 6), ("\U0001f600", 12)]
)
def test_a_report_too_large_keeps_the_longest_head_that_fits_and_says_so(
    char: str, escaped_bytes: int
) -> None:
    limit = 5_000
    text = char * 10_000
    assert stops.payload_bytes(text) == escaped_bytes * 10_000 + 2  # with its quotes
    kept = stops.fit_report(text, limit=limit)
    assert stops.payload_bytes(kept) <= limit
    head = kept[: kept.index("\n\n---\n*This report stops here")]
    assert head == char * len(head)
    assert f"its first {len(head)} characters are kept" in kept
    assert "(10000 characters)" in kept
    # The longest head: one more character would not have fitted (the note's count
    # may take a digit more or less).
    assert limit - stops.payload_bytes(kept) < escaped_bytes + 2


@pytest.mark.parametrize("char", ["a", "\x01", "\u8a9e", "\U0001f4da"])
def test_head_within_keeps_the_longest_head_that_fits_a_payload(char: str) -> None:
    text = char * 10_000
    head = stops.head_within(text, 9_000)
    assert text.startswith(head)
    assert stops.payload_bytes(head) <= 9_000 < stops.payload_bytes(text[: len(head) + 1])
    assert stops.head_within("short", 9_000) == "short"
    assert stops.head_within(text, 1) == char  # never empty: a chunk always moves on

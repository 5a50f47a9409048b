"""Text from outside printed on a terminal: control characters shown, markup escaped."""

from __future__ import annotations

import pytest
from rich.text import Text

from steadfast_cli.display import console, progress_line, runs_table
from steadfast_cli.safetext import cell, printable, shown
from steadfast_contract.starter import RunRow

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "printed"),
    [
        ("plain text, unchanged", "plain text, unchanged"),
        ("lines\nand\ttabs stay", "lines\nand\ttabs stay"),
        ("CR LF\r\nis a line feed", "CR LF\nis a line feed"),
        ("\x1b]52;c;cm0gLXJm\x07", "␛]52;c;cm0gLXJm␇"),  # OSC 52: write the clipboard
        ("\x1b[2J\x1b[31mred", "␛[2J␛[31mred"),  # clear the screen, recolour
        (
            "\x1b]8;;https://evil.test\x1b\\docs\x1b]8;;\x1b\\",
            "␛]8;;https://evil.test␛\\docs␛]8;;␛\\",
        ),
        ("shown\roverwritten", "shown␍overwritten"),
        ("back\x08\x08space", "back␈␈space"),
        ("nul\x00del\x7f", "nul␀del␡"),
        ("\x9b31m C1 CSI, \x9d OSC", "\ufffd31m C1 CSI, \ufffd OSC"),
        ("é 日本 ✓ עברית 😀", "é 日本 ✓ עברית 😀"),  # printable text of any script stays
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),  # stdout cannot encode it
    ],
)
def test_control_characters_are_shown_and_never_sent(raw: str, printed: str) -> None:
    assert printable(raw) == printed
    assert not any((ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F for c in printed)


@pytest.mark.parametrize(
    "raw",
    [
        "Q3 [/bold] outlook",
        "[link=https://evil.test]docs[/link]",
        "[red]not red",
        "a\\[b",  # a backslash before a bracket that is no tag
        "a\\[red]b",  # ... and before one that is
        "a\\\\[/x] [[b]] [",
        "no brackets \\ at all",
    ],
)
def test_markup_in_outside_text_is_printed_as_written(raw: str) -> None:
    assert Text.from_markup(f"[bold]{shown(raw)}[/bold]").plain == raw
    assert cell(raw).plain == raw


def test_a_runs_table_prints_a_hostile_topic_id_and_phase_as_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A topic with a closing tag used to stop ``run``, ``status`` and ``dev`` with a
    MarkupError; the verbs' console prints them, and ``:emoji:`` codes, as written."""
    row = RunRow(
        "Q3 [/bold] outlook :warning: \x1b[2J", "wf-[/x]", "Odd[/phase]\x07", report_id="r\x1b1"
    )
    out = console()
    out.print(runs_table([row]))
    out.print(Text.from_markup(progress_line(row)))
    printed = capsys.readouterr().out
    assert "Q3 [/bold] outlook :warning: ␛[2J" in printed
    assert "wf-[/x]" in printed
    assert "Odd[/phase]␇" in printed
    assert "r␛1" in printed
    assert "\x1b" not in printed
    assert "\x07" not in printed

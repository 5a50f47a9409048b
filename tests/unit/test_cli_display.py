"""What ``steadfast status`` and ``steadfast dev`` print: what resuming saved, and saved reports."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.console import Console

from steadfast_cli import display
from steadfast_cli.commands._reports import reports_table
from steadfast_cli.commands.status import once_each
from steadfast_contract.models import Interruption, Phase, RunStatus
from steadfast_contract.starter import RunRow, row_from_status
from steadfast_worker.activities.storage import StoredReport

pytestmark = pytest.mark.unit

KILLED_MID_REPORT = Interruption("write_report", 2, 1, 1, 0.0012)


def _cells(table: object, first: str) -> list[str]:
    """The cells of the rendered table's line whose first cell is ``first``."""
    console = Console(record=True, width=200)
    console.print(table)
    for line in console.export_text().splitlines():
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no line starts with {first!r}")


def test_a_status_row_carries_what_resuming_saved() -> None:
    st = RunStatus(
        topic="t",
        phase=Phase.COMPLETED,
        avoided_usd=0.0012,
        calls_not_repeated=1,
        interruptions=[KILLED_MID_REPORT],
        max_turns=20,
    )
    row = row_from_status("wf", st)
    assert (row.avoided_usd, row.calls_not_repeated, row.max_turns) == (0.0012, 1, 20)
    assert row.interruptions == (KILLED_MID_REPORT,)


def test_the_runs_table_has_a_saved_column_and_its_total() -> None:
    rows = [
        RunRow("alpha", "wf-a", "Completed", llm_calls=2, cost_usd=0.02, avoided_usd=0.0012),
        RunRow("beta", "wf-b", "Completed", llm_calls=2, cost_usd=0.03, avoided_usd=0.0030),
    ]
    table = display.runs_table(rows)
    assert [c.header for c in table.columns][-2:] == ["Cost (USD)", "Saved (USD)"]
    assert _cells(table, "alpha")[-2:] == ["$0.0200", "$0.0012"]
    assert _cells(table, "Total")[-2:] == ["$0.0500", "$0.0042"]


@pytest.mark.parametrize(
    ("interruption", "calls", "line"),
    [
        pytest.param(
            KILLED_MID_REPORT, 2,
            "killed during call 2 of 2 (write_report); resumed; 1 finished call not repeated;"
            " $0.0012 not re-paid",
            id="the report call lost after the query call finished",
        ),
        pytest.param(
            Interruption("deep_turn", 17, 2, 16, 0.32), 20,
            "killed during call 17 of 20 (deep_turn) 2 times; resumed;"
            " 32 finished calls not repeated; $0.3200 not re-paid",
            id="a turn lost twice: its 16 finished turns twice",
        ),
        pytest.param(
            Interruption("save_report", 2, 1, 2, 0.005), 2,
            "killed after call 2 of 2 (save_report); resumed; 2 finished calls not repeated;"
            " $0.0050 not re-paid",
            id="a step that is not a call comes after the calls",
        ),
        pytest.param(
            Interruption("generate_queries", 1, 1, 0, 0.0), 2,
            "killed during call 1 of 2 (generate_queries); resumed; 0 finished calls not"
            " repeated; $0.0000 not re-paid",
            id="the first call lost: nothing to re-pay",
        ),
        pytest.param(
            Interruption("web_search", 0, 1, 0, 0.0), 0,
            "killed before the first LLM call (web_search); resumed; 0 finished calls not"
            " repeated; $0.0000 not re-paid",
            id="nothing finished yet",
        ),
    ],
)  # fmt: skip
def test_an_interruption_reads_as_where_it_struck_and_what_was_not_re_paid(
    interruption: Interruption, calls: int, line: str
) -> None:
    assert display.interruption_line(interruption, calls, "killed") == line


def test_of_n_is_a_deep_runs_planned_turns_else_its_llm_calls() -> None:
    assert display.calls_of(RunRow("t", "wf", "Completed", llm_calls=3)) == 3
    assert display.calls_of(RunRow("t", "wf", "Researching", llm_calls=5, max_turns=20)) == 20


def test_saved_lines_list_each_interruption_then_the_total_when_more_than_one() -> None:
    one = RunRow(
        "t", "wf", "Completed", llm_calls=2, avoided_usd=0.0012, calls_not_repeated=1,
        interruptions=(KILLED_MID_REPORT,),
    )  # fmt: skip
    assert display.saved_lines(one) == [
        "interrupted during call 2 of 2 (write_report); resumed; 1 finished call not repeated;"
        " $0.0012 not re-paid"
    ]
    save = Interruption("save_report", 2, 1, 2, 0.005)
    two = RunRow(
        "t", "wf", "Completed", llm_calls=2, avoided_usd=0.0062, calls_not_repeated=3,
        interruptions=(KILLED_MID_REPORT, save),
    )  # fmt: skip
    assert display.saved_lines(two)[-1] == (
        "in all: 3 finished calls not repeated; $0.0062 not re-paid"
    )
    assert display.saved_lines(RunRow("t", "wf", "Completed", llm_calls=2)) == []


def _report(workflow_id: str, n: int) -> StoredReport:
    saved = f"2026-12-0{n}T02:41:40+00:00"
    return StoredReport(
        workflow_id, f"run-{n}", f"rep-{n}", "a", "ns", "t", "x" * n, 0.01, saved, saved
    )


def test_reports_a_schedule_started_say_when_they_were_scheduled() -> None:
    base = "research-ns-a-topic-3bfb22fe39"
    reports = [_report(base, 1), _report(f"{base}-2026-12-02T02:41:34Z", 2)]
    console = Console(record=True, width=200)
    console.print(reports_table(base, reports))
    text = console.export_text()
    assert "Scheduled for" in text
    (first, second) = [line for line in text.splitlines() if "rep-" in line]
    assert "rep-1" in first
    assert "2026-12-02T02:41:34Z" not in first
    assert "rep-2" in second
    assert "2026-12-02T02:41:34Z" in second


def test_reports_of_one_id_have_no_schedule_column() -> None:
    console = Console(record=True, width=200)
    console.print(reports_table("wf", [_report("wf", 1)]))
    assert "Scheduled for" not in console.export_text()


def test_a_deep_turns_heading_has_figures_only_while_the_run_is_at_or_one_past_it() -> None:
    live = RunRow("t", "wf", "Researching", cost_usd=0.0106, max_turns=4, turn=3, tool_calls=3)
    assert display.turn_heading(live, 3) == (
        "--- turn 3/4 Researching · 3 tool calls · 0 retries · $0.0106 so far ---"
    )
    assert display.turn_heading(live, 2).startswith("--- turn 2/4 Researching · 3 tool calls")
    assert display.turn_heading(live, 1) == "--- turn 1/4 ---"  # a late follower's replay
    closed = RunRow("t", "wf", "Completed", max_turns=4, turn=4, closed_at=datetime.now(UTC))
    assert display.turn_heading(closed, 4) == "--- turn 4/4 ---"


def test_a_deep_run_progresses_by_turn_as_well_as_by_phase() -> None:
    before = RunRow("t", "wf", "Researching", max_turns=4, turn=1)
    assert display.progressed(before, RunRow("t", "wf", "Researching", max_turns=4, turn=2))
    assert display.progressed(before, RunRow("t", "wf", "Writing", max_turns=4, turn=1))
    assert not display.progressed(before, RunRow("t", "wf", "Researching", max_turns=4, turn=1))


def test_in_80_columns_the_runs_table_keeps_every_phase_and_figure_whole() -> None:
    rows = [
        RunRow("a long topic about batteries", "research-" + "x" * 70, "AwaitingApproval",
               "9234569e-e603-4107-b113-8c81a6de7be4", 5, 0, 0.04, avoided_usd=0.0131),
        RunRow("b", "wf-b", "BudgetExhausted", "", 2, 11, 12.2345),
    ]  # fmt: skip
    out = Console(width=80, record=True, file=io.StringIO())
    out.print(display.RunsView(rows))
    text = out.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for whole in ("AwaitingApproval", "BudgetExhausted", "$0.0400", "$12.2345", "$0.0131"):
        assert whole in text
    assert "│ Total" in text
    assert "$12.2745" in text  # the total cost
    wide = Console(width=200, record=True, file=io.StringIO())
    wide.print(display.RunsView(rows))
    assert "Workflow ID" in wide.export_text()  # wide enough: the table of eight columns


@pytest.mark.parametrize(
    ("usd", "text"),
    [(0.0, "$0.0000"), (0.00004, "<$0.0001"), (0.00005, "$0.0001"), (0.1436, "$0.1436")],
)
def test_a_cost_above_zero_is_never_printed_as_nothing(usd: float, text: str) -> None:
    """ "1 finished call not repeated; $0.0000 not re-paid" contradicted itself (the audit)."""
    assert display.format_cost(usd) == text


def test_a_run_named_twice_is_one_row() -> None:
    """``status WFID -f agent.yaml`` with WFID one of the manifest's runs listed it twice
    and counted its cost twice in the totals (the audit)."""
    named = [("wf-a", ""), ("wf-b", ""), ("wf-a", "topic a"), ("wf-c", "topic c"), ("wf-b", "")]
    assert once_each(named) == [("wf-a", "topic a"), ("wf-b", ""), ("wf-c", "topic c")]

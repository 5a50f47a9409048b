"""How runs look on a terminal: the tables and progress lines of dev, run and status.

One rendering for every verb, so a run reads the same whether ``steadfast dev``
ran it or ``steadfast status`` looked it up later. Text that comes from outside (a
topic, an id, a phase read from a workflow) goes through :mod:`steadfast_cli.safetext`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table

from steadfast_cli.safetext import cell, printable, shown
from steadfast_contract.models import Interruption
from steadfast_contract.starter import RunRow, counted_runs, total_cost

_PHASE_STYLE = {
    "Completed": "green",
    "Failed": "red",
    "BudgetExhausted": "red",
    "Rejected": "yellow",
    "ApprovalExpired": "yellow",
    "Cancelled": "yellow",
    "Terminated": "red",
    "TimedOut": "red",
    "AwaitingApproval": "magenta",
}


#: Width used when output is not a terminal: rich would otherwise assume 80
#: columns and fold workflow and report ids, which then cannot be copied.
PIPE_WIDTH = 200


def console() -> Console:
    """The console every verb prints through; wide when piped, unless COLUMNS says.

    No ``:emoji:`` codes: a topic or a message saying ``:warning:`` is printed as written.
    """
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console(emoji=False)
    return Console(width=PIPE_WIDTH, emoji=False)


def phase_text(phase: str) -> str:
    style = _PHASE_STYLE.get(phase, "cyan")
    return f"[{style}]{shown(phase)}[/{style}]"


def format_cost(usd: float) -> str:
    """Dollars to four places; an amount above zero that would round to $0.0000 says
    so (``<$0.0001``), so a saving is never printed as nothing."""
    if 0 < usd < 0.00005:
        return "<$0.0001"
    return f"${usd:.4f}"


def runs_table(rows: Sequence[RunRow], title: str = "Research runs") -> Table:
    """topic, workflow id, phase, report id, LLM calls, retries, cost, and what resuming
    saved (spend a restart from scratch would have re-paid); with totals."""
    table = Table(title=title, show_footer=len(rows) > 1)
    # The ids are long (a workflow id is about 76 characters): they fold onto more lines
    # in a narrow terminal, while the phase and the figures keep their width.
    table.add_column("Topic", footer="Total", overflow="fold", min_width=12, ratio=2)
    table.add_column("Workflow ID", overflow="fold", min_width=12, ratio=3)
    table.add_column("Phase", no_wrap=True)
    table.add_column("Report ID", overflow="fold", min_width=8, ratio=2)
    counted = counted_runs(rows)  # the totals: a chain continued as new, once
    calls, retries = sum(r.llm_calls for r in counted), sum(r.retries for r in counted)
    table.add_column("LLM calls", justify="right", footer=str(calls), no_wrap=True)
    table.add_column("Retries", justify="right", footer=str(retries), no_wrap=True)
    spent = format_cost(total_cost(counted))
    table.add_column("Cost (USD)", justify="right", footer=spent, no_wrap=True)
    saved = sum(r.avoided_usd for r in counted)
    table.add_column("Saved (USD)", justify="right", footer=format_cost(saved), no_wrap=True)
    for r in rows:
        table.add_row(
            cell(r.topic),
            cell(r.workflow_id),
            phase_text(r.phase),
            cell(r.report_id or "-"),
            str(r.llm_calls),
            str(r.retries),
            format_cost(r.cost_usd),
            format_cost(r.avoided_usd),
        )
    return table


#: Below this many columns the runs table's eight columns cannot all fit (phase and
#: figures alone take 53, the ids' least 32, borders and padding 25): it is printed
#: compact instead, each run's topic, workflow id and report id in one column.
COMPACT_BELOW = 120


class RunsView:
    """The runs table as wide as where it is printed allows: :func:`runs_table`, or
    under :data:`COMPACT_BELOW` columns :func:`compact_runs_table`, whose phase and
    figures stay whole in 80 columns where the wide one cropped retries, cost and saved."""

    def __init__(self, rows: Sequence[RunRow], title: str = "Research runs") -> None:
        self.rows, self.title = rows, title

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if options.max_width < COMPACT_BELOW:
            yield compact_runs_table(self.rows, self.title)
        else:
            yield runs_table(self.rows, self.title)


def compact_runs_table(rows: Sequence[RunRow], title: str = "Research runs") -> Table:
    """:func:`runs_table` for a narrow terminal: one "Run" column (topic, workflow id,
    report id, one per line, folded) beside the phase and the figures, shorter headed."""
    table = Table(title=title, show_footer=len(rows) > 1)
    table.add_column("Run", footer="Total", overflow="fold", min_width=10)
    table.add_column("Phase", no_wrap=True)
    counted = counted_runs(rows)  # the totals: a chain continued as new, once
    table.add_column("Calls", justify="right", footer=str(sum(r.llm_calls for r in counted)))
    table.add_column("Retries", justify="right", footer=str(sum(r.retries for r in counted)))
    spent, saved = (
        format_cost(total_cost(counted)),
        format_cost(sum(r.avoided_usd for r in counted)),
    )
    table.add_column("Cost", justify="right", footer=spent, no_wrap=True)
    table.add_column("Saved", justify="right", footer=saved, no_wrap=True)
    for r in rows:
        run = cell(r.topic, "bold")
        run.append(f"\n{printable(r.workflow_id)}")
        run.append(f"\nreport {printable(r.report_id or '-')}", style="dim")
        table.add_row(
            run,
            phase_text(r.phase),
            str(r.llm_calls),
            str(r.retries),
            format_cost(r.cost_usd),
            format_cost(r.avoided_usd),
        )
    return table


def calls_of(row: RunRow) -> int:
    """The N of "call k of N": a deep run's planned turns, else the LLM calls it made."""
    return row.max_turns or row.llm_calls


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def interruption_line(i: Interruption, calls: int, verb: str = "interrupted") -> str:
    """One interruption as a sentence: where it struck, and what resuming did not re-pay.

    ``killed during call 2 of 2 (write_report); resumed; 1 finished call not repeated;
    $0.0012 not re-paid``. A step that is not an LLM call (a search, the save) comes
    after the calls finished before it.
    """
    if i.call > i.finished_calls:
        where = f"during call {i.call} of {max(calls, i.call)}"
    elif i.call:
        where = f"after call {i.call} of {max(calls, i.call)}"
    else:
        where = "before the first LLM call"
    times = f" {i.attempts} times" if i.attempts > 1 else ""
    repeated = _plural(i.attempts * i.finished_calls, "finished call")
    return (
        f"{verb} {where} ({i.activity}){times}; resumed; {repeated} not repeated; "
        f"{format_cost(i.avoided_usd)} not re-paid"
    )


def saved_lines(row: RunRow, verb: str = "interrupted") -> list[str]:
    """What resuming saved ``row``: one line per interruption kept, then the total."""
    lines = [interruption_line(i, calls_of(row), verb) for i in row.interruptions]
    # The list keeps the newest few: the total says what all of them saved.
    if len(row.interruptions) > 1 or (row.calls_not_repeated and not row.interruptions):
        lines.append(
            f"in all: {_plural(row.calls_not_repeated, 'finished call')} not repeated; "
            f"{format_cost(row.avoided_usd)} not re-paid"
        )
    return lines


def progressed(before: RunRow, after: RunRow) -> bool:
    """Whether ``after`` is worth a line of its own where there is no live display (a
    pipe, a log): a new phase, or a deep run's next turn (its phase stays Researching)."""
    return (after.phase, after.turn) != (before.phase, before.turn)


def progress_line(row: RunRow) -> str:
    """One line of the live display: where the run is and what it has cost so far."""
    if row.max_turns:  # a deep run: its turn and the tools it called
        return _turn_line(row, row.turn, phase_text(row.phase))
    retries, cost = _counted(row.retries, "retry", "retries"), format_cost(row.cost_usd)
    return (
        f"step {row.step}/{row.total_steps} {phase_text(row.phase)} · "
        f"{_counted(row.llm_calls, 'LLM call', 'LLM calls')} · {retries} · {cost}"
    )


#: How far a run may be past the turn whose text ``run --follow`` just received for
#: that turn's heading to carry the run's figures: a turn's text reaches the stream as
#: its call ends, when the next turn may have begun; further means a late follower.
HEADING_LAG_TURNS = 1


def turn_heading(row: RunRow, turn: int) -> str:
    """The plain line over a deep run's turn ``turn`` in ``run --follow``, with the
    tool calls and cost so far from ``row`` (asked as the turn's text arrived). A run
    followed after the fact (closed, or turns further on) gets the turn alone: its
    figures are of a later moment."""
    if row.running and row.max_turns and 0 <= row.turn - turn <= HEADING_LAG_TURNS:
        return f"--- {_turn_line(row, turn, printable(row.phase))} so far ---"
    return f"--- turn {turn}/{max(row.max_turns, turn)} ---"


def _turn_line(row: RunRow, turn: int, phase: str) -> str:
    return (
        f"turn {turn}/{row.max_turns} {phase} · "
        f"{_counted(row.tool_calls, 'tool call', 'tool calls')} · "
        f"{_counted(row.retries, 'retry', 'retries')} · {format_cost(row.cost_usd)}"
    )


def _counted(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"

"""How runs look on a terminal: the tables and progress lines of dev, run and status.

One rendering for every verb, so a run reads the same whether ``steadfast dev``
ran it or ``steadfast status`` looked it up later.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from steadfast_contract.starter import RunRow, total_cost

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
    """The console every verb prints through; wide when piped, unless COLUMNS says."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=PIPE_WIDTH)


def phase_text(phase: str) -> str:
    style = _PHASE_STYLE.get(phase, "cyan")
    return f"[{style}]{phase}[/{style}]"


def format_cost(usd: float) -> str:
    return f"${usd:.4f}"


def runs_table(rows: Sequence[RunRow], title: str = "Research runs") -> Table:
    """topic, workflow id, phase, report id, LLM calls, retries, cost; with a total."""
    table = Table(title=title, show_footer=len(rows) > 1)
    table.add_column("Topic", footer="Total", overflow="fold")
    table.add_column("Workflow ID", no_wrap=True, overflow="fold")
    table.add_column("Phase")
    table.add_column("Report ID", no_wrap=True, overflow="fold")
    table.add_column("LLM calls", justify="right", footer=str(sum(r.llm_calls for r in rows)))
    table.add_column("Retries", justify="right", footer=str(sum(r.retries for r in rows)))
    table.add_column("Cost (USD)", justify="right", footer=format_cost(total_cost(list(rows))))
    for r in rows:
        table.add_row(
            r.topic,
            r.workflow_id,
            phase_text(r.phase),
            r.report_id or "-",
            str(r.llm_calls),
            str(r.retries),
            format_cost(r.cost_usd),
        )
    return table


def progress_line(row: RunRow) -> str:
    """One line of the live display: where the run is and what it has cost so far."""
    return (
        f"step {row.step}/{row.total_steps} {phase_text(row.phase)} · "
        f"{row.llm_calls} LLM calls · {row.retries} retries · {format_cost(row.cost_usd)}"
    )

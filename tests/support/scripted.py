"""A model whose turns a test scripts, on a worker that is the harness's otherwise.

The simulator plays a well-behaved agent (two findings, one or two fetches a turn);
a test of what a hostile or unusual model does scripts its tool calls instead, in a
test activity standing in for ``deep_turn``, while every other activity is the
worker's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.worker import Worker

from steadfast_contract import activities as act
from steadfast_worker.activities import ResearchActivities
from steadfast_worker.ledger import DailyBudgetLedger
from steadfast_worker.workflows import ResearchWorkflow


def scripted_turn(inp: act.DeepTurnInput, calls: list[act.ToolCall]) -> act.DeepTurnOutput:
    """A turn that makes ``calls`` (at no cost), or writes a short report without them."""
    return act.DeepTurnOutput(
        "tool_use" if calls else "end_turn",
        calls,
        "" if calls else "# Report\n\nWhat the findings say.\n",
        act.LlmCall(inp.model, calls=1),
        activity.info().attempt,
        1000,
    )


def worker_with(
    client: Any,
    task_queue: str,
    activities: ResearchActivities,
    replaced: dict[Callable[..., Any], Callable[..., Any]],
) -> Worker:
    """A worker of the research and ledger workflows running ``activities``, each of
    ``replaced``'s keys replaced by its value (a test activity of the same name)."""
    run = [replaced.get(f, f) for f in activities.all()]
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ResearchWorkflow, DailyBudgetLedger],
        activities=run,
    )

"""``steadfast budget``: give a running run more (or less) budget.

A run whose next LLM call does not fit its budget (``maxUSDPerRun``) or the
agent's day (``maxUSDPerDay``) pauses in phase ``AwaitingBudget`` for up to
``budget.pauseTimeout``. This command raises the run's limits with the workflow's
``budget`` update, so it answers at once: the run accepts (and resumes, nothing
it paid for asked again) or says why not -- a limit below what the run already
spent, or a run that is over. The operator sends the same update to running
runs when a ResearchAgent's budget is edited.
"""

from __future__ import annotations

import argparse
import asyncio
import math

from rich.console import Console
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from steadfast_cli import display
from steadfast_cli.commands._agents import connect_or_explain
from steadfast_cli.errors import refuse
from steadfast_cli.safetext import shown
from steadfast_contract import models
from steadfast_contract.config import TemporalConfig
from steadfast_worker.connection import add_connection_arguments, temporal_config_from_args

HELP = "change a running run's budget (a run waiting in AwaitingBudget resumes)"


def _usd(text: str) -> float:
    """A positive amount of dollars, or argparse's one-line error."""
    try:
        usd = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an amount of USD: {text!r}") from None
    if not (usd > 0 and math.isfinite(usd)):
        raise argparse.ArgumentTypeError(f"a budget is an amount above 0, got {text}")
    return usd


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow_id", metavar="WORKFLOW_ID", help="the run whose budget to set")
    parser.add_argument(
        "--max-usd",
        type=_usd,
        default=None,
        metavar="N",
        help="the run's budget in USD (maxUSDPerRun); not below what it already spent",
    )
    parser.add_argument(
        "--max-usd-per-day",
        type=_usd,
        default=None,
        metavar="N",
        help="the daily budget in USD this run asks the agent's day against (maxUSDPerDay)",
    )
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    console = display.console()
    if args.max_usd is None and args.max_usd_per_day is None:
        return refuse("budget", "give --max-usd and/or --max-usd-per-day")
    return asyncio.run(_budget(args, console, temporal_config_from_args(args)))


async def set_budget(
    client: Client,
    workflow_id: str,
    max_usd: float | None = None,
    max_usd_per_day: float | None = None,
) -> models.SetBudgetResult:
    """Send the ``budget`` update and return the workflow's answer (refusals raise
    :class:`~temporalio.client.WorkflowUpdateFailedError`)."""
    handle = client.get_workflow_handle(workflow_id)
    result: models.SetBudgetResult = await handle.execute_update(
        models.BUDGET_UPDATE,
        models.SetBudgetInput(max_usd, max_usd_per_day),
        result_type=models.SetBudgetResult,
    )
    return result


async def _budget(args: argparse.Namespace, console: Console, temporal: TemporalConfig) -> int:
    client = await connect_or_explain(temporal, console, "budget")
    if isinstance(client, int):
        return client
    try:
        result = await set_budget(client, args.workflow_id, args.max_usd, args.max_usd_per_day)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        why = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        console.print(f"[red]budget refused:[/red] {shown(why)}")
        return 1
    except RPCError as err:
        console.print(f"[red]error:[/red] {shown(args.workflow_id)}: {shown(err.message)}")
        return 1
    console.print(f"{shown(args.workflow_id)}: {shown(result.message)}")
    return 0

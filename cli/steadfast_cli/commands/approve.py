"""``steadfast approve``: the human in the loop of a run that requires approval.

Approval is a Temporal *update*, so the command learns at once whether the
workflow accepted it (a reviewer name is required; a run that is not waiting in
``AwaitingApproval`` -- its report not saved yet, or the run already over -- says
so) instead of firing a signal into the void. Rejection is a signal: it needs no
answer, and the run ends in phase ``Rejected``; a rejection sent before the run
waits for review is ignored (the worker logs it). A run nobody answers within
``notify.approvalTimeout`` ends in phase ``ApprovalExpired`` without mail.
"""

from __future__ import annotations

import argparse
import asyncio

from rich.console import Console
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from steadfast_cli import display
from steadfast_cli.commands._agents import connect_or_explain
from steadfast_contract import models
from steadfast_contract.config import TemporalConfig
from steadfast_worker.connection import add_connection_arguments, temporal_config_from_args

HELP = "approve (or --reject) a run waiting in phase AwaitingApproval"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow_id", metavar="WORKFLOW_ID", help="the run to approve")
    parser.add_argument("--reviewer", default="", help="who approves (required to approve)")
    parser.add_argument("--comment", default="", help="a note kept with the approval")
    parser.add_argument(
        "--reject", action="store_true", help="reject the report instead; the run ends Rejected"
    )
    parser.add_argument("--reason", default="", help="why the report is rejected (with --reject)")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    console = display.console()
    if not args.reject and not args.reviewer.strip():
        console.print("[red]error:[/red] --reviewer is required to approve")
        return 2
    return asyncio.run(_approve(args, console, temporal_config_from_args(args)))


async def approve(
    client: Client, workflow_id: str, reviewer: str, comment: str = ""
) -> models.ApproveResult:
    """Send the ``approve`` update and return the workflow's answer."""
    handle = client.get_workflow_handle(workflow_id)
    result: models.ApproveResult = await handle.execute_update(
        models.APPROVE_UPDATE,
        models.ApproveInput(reviewer=reviewer, comment=comment),
        result_type=models.ApproveResult,
    )
    return result


async def reject(client: Client, workflow_id: str, reviewer: str, reason: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    await handle.signal(models.REJECT_SIGNAL, models.RejectInput(reviewer=reviewer, reason=reason))


async def _approve(args: argparse.Namespace, console: Console, temporal: TemporalConfig) -> int:
    client = await connect_or_explain(temporal, console)
    if client is None:
        return 1
    try:
        if args.reject:
            await reject(client, args.workflow_id, args.reviewer, args.reason)
            console.print(f"rejected {args.workflow_id}")
            return 0
        result = await approve(client, args.workflow_id, args.reviewer, args.comment)
    except WorkflowUpdateFailedError as err:
        cause = err.cause or err
        console.print(f"[red]approval refused:[/red] {cause}")
        return 1
    except RPCError as err:
        console.print(f"[red]error:[/red] {args.workflow_id}: {err.message}")
        return 1
    if not result.accepted:
        console.print(f"[yellow]not accepted:[/yellow] {result.message}")
        return 1
    console.print(f"approved {args.workflow_id} by {args.reviewer}. {result.message}".strip())
    return 0

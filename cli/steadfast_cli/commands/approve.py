"""``steadfast approve``: the human in the loop of a run that requires approval.

Approval is a Temporal *update*, so the command learns at once whether the
workflow accepted it (a reviewer name is required; a run that is not waiting in
``AwaitingApproval`` -- its report not saved yet, or the run already over -- says
so) instead of firing a signal into the void. Rejection is a signal, which the
workflow ignores unless the run waits for review, so the command asks the run's
phase first (and sends nothing to a run that is not waiting), then reports the
phase the run reached: "rejected" is printed only once the run says ``Rejected``.
A run nobody answers within ``notify.approvalTimeout`` ends in phase
``ApprovalExpired`` without mail.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, Final

from rich.console import Console
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError

from steadfast_cli import display
from steadfast_cli.commands._agents import connect_or_explain
from steadfast_cli.errors import refuse
from steadfast_cli.safetext import shown
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
        return refuse("approve", "--reviewer is required to approve")
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


#: How long to wait for a worker to answer a status query, and for the run to
#: show the rejection.
CONFIRM_SECONDS: Final = 10.0


async def _phase(handle: WorkflowHandle[Any, Any]) -> models.Phase | None:
    """The run's phase, or None when no worker answers in time."""
    try:
        status: models.RunStatus = await asyncio.wait_for(
            handle.query(models.STATUS_QUERY, result_type=models.RunStatus), CONFIRM_SECONDS
        )
    except (TimeoutError, WorkflowQueryFailedError):
        return None
    return status.phase


async def reject(
    client: Client, workflow_id: str, reviewer: str, reason: str
) -> tuple[bool, models.Phase | None]:
    """Reject the run if it waits for review: (signal sent, the phase it then shows).

    The phase is None when no worker answered (the signal is then still sent: the
    run applies it when a worker picks it up, if it is waiting for review).
    """
    handle = client.get_workflow_handle(workflow_id)
    before = await _phase(handle)
    if before is not None and before != models.Phase.AWAITING_APPROVAL:
        return False, before
    await handle.signal(models.REJECT_SIGNAL, models.RejectInput(reviewer=reviewer, reason=reason))
    if before is None:
        return True, None
    deadline = asyncio.get_running_loop().time() + CONFIRM_SECONDS
    while True:
        phase = await _phase(handle)
        if phase != models.Phase.AWAITING_APPROVAL or asyncio.get_running_loop().time() > deadline:
            return True, phase
        await asyncio.sleep(0.2)


def _print_rejection(
    console: Console, workflow_id: str, sent: bool, phase: models.Phase | None
) -> int:
    if not sent:
        now = phase.value if phase else "unknown"
        console.print(
            f"[yellow]not rejected:[/yellow] {shown(workflow_id)} is not waiting for review "
            f"(phase {now}); nothing was sent"
        )
        return 1
    if phase == models.Phase.REJECTED:
        console.print(f"rejected {shown(workflow_id)}")
        return 0
    if phase is None:
        console.print(
            f"rejection sent to {shown(workflow_id)}; no worker answered yet, so it is not "
            "confirmed"
        )
        return 0
    console.print(
        f"[yellow]not rejected:[/yellow] {shown(workflow_id)} went on to phase {phase.value}"
    )
    return 1


async def _approve(args: argparse.Namespace, console: Console, temporal: TemporalConfig) -> int:
    client = await connect_or_explain(temporal, console, "approve")
    if isinstance(client, int):
        return client
    try:
        if args.reject:
            sent, phase = await reject(client, args.workflow_id, args.reviewer, args.reason)
            return _print_rejection(console, args.workflow_id, sent, phase)
        result = await approve(client, args.workflow_id, args.reviewer, args.comment)
    except WorkflowUpdateFailedError as err:
        cause = err.cause or err
        console.print(f"[red]approval refused:[/red] {shown(cause)}")
        return 1
    except RPCError as err:
        console.print(f"[red]error:[/red] {shown(args.workflow_id)}: {shown(err.message)}")
        return 1
    if not result.accepted:
        console.print(f"[yellow]not accepted:[/yellow] {shown(result.message)}")
        return 1
    said = f"approved {shown(args.workflow_id)} by {shown(args.reviewer)}."
    console.print(f"{said} {shown(result.message)}".strip())
    return 0

"""The approval gate's decisions, as pure functions of what the workflow knows.

``ResearchWorkflow`` waits in ``AwaitingApproval`` for the ``approve`` update or the
``reject`` signal, at most ``notify.approvalTimeout``. Whether an approval is
accepted, and how the wait ends, are decided here so they are unit-tested without
a server; the workflow only applies the answer. So is what a cancelled run's status
says (:func:`cancel_message`): a cancel that reaches a run whose report is saved
leaves the report, and sends no mail unless the mail step had already begun.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from steadfast_contract.durations import format_duration
from steadfast_contract.models import ApproveInput, Phase, RejectInput


def approval_refusal(inp: ApproveInput, require_approval: bool, phase: Phase, decided: bool) -> str:
    """Why the ``approve`` update is refused now; ``""`` when it is accepted."""
    if not inp.reviewer or not inp.reviewer.strip():
        return "reviewer is required: say who approves the report"
    if not require_approval:
        return "this run does not require approval"
    if decided:
        return "this run has already been approved or rejected"
    if phase.terminal:
        return f"this run has already ended ({phase.value})"
    if phase != Phase.AWAITING_APPROVAL:
        # Approving now would mail a report nobody has read: it does not exist yet.
        return (
            f"the report is not ready for review (phase {phase.value}); "
            f"approve once the run is {Phase.AWAITING_APPROVAL.value}"
        )
    return ""


@dataclass(frozen=True)
class Outcome:
    """How the wait for review ended: ``phase`` is ``None`` when the run goes on to mail."""

    phase: Phase | None
    reviewer: str = ""
    message: str = ""


def outcome(
    approval: ApproveInput | None, rejection: RejectInput | None, timeout_seconds: float
) -> Outcome:
    """The end of the wait; neither answer means the timeout came first."""
    if rejection is not None:
        reason = rejection.reason or "no reason given"
        return Outcome(Phase.REJECTED, rejection.reviewer, f"rejected: {reason}")
    if approval is not None:
        return Outcome(None, approval.reviewer.strip())
    waited = format_duration(timedelta(seconds=timeout_seconds))
    return Outcome(Phase.APPROVAL_EXPIRED, "", f"no approval within {waited}")


def cancel_message(report_id: str, mailed: bool, email: str) -> str:
    """The status message of a cancelled run: what of its report is left, and whether
    its review mail went out. A cancel that reaches the run once its mail step has begun
    cannot hold the mail back (it may be with the SMTP server already): the step runs
    to its end, and the message says how it ended."""
    if not report_id:
        return "cancelled"
    if mailed:
        return (
            f"cancelled once its review mail was under way (email {email or 'unknown'}), "
            f"nothing to undo; the report is saved as report {report_id}"
        )
    return f"cancelled; the report is saved as report {report_id}, and no review mail was sent"

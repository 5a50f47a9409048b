"""The approval gate's decisions, as pure functions of what the workflow knows.

``ResearchWorkflow`` waits in ``AwaitingApproval`` for the ``approve`` update or the
``reject`` signal, at most ``notify.approvalTimeout``. Whether an approval is
accepted, and how the wait ends, are decided here so they are unit-tested without
a server; the workflow only applies the answer.
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

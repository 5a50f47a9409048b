"""The approval gate's decisions (``steadfast_worker.review``), without a server."""

from __future__ import annotations

import pytest

from steadfast_contract.models import ApproveInput, Phase, RejectInput
from steadfast_worker import review

pytestmark = pytest.mark.unit

ALICE = ApproveInput("alice")


@pytest.mark.parametrize(
    "phase",
    [Phase.PENDING, Phase.GENERATING_QUERIES, Phase.SEARCHING, Phase.WRITING, Phase.SAVING],
)
def test_an_approval_before_the_report_is_saved_is_refused(phase: Phase) -> None:
    refusal = review.approval_refusal(ALICE, True, phase, decided=False)
    assert f"not ready for review (phase {phase.value})" in refusal


def test_an_approval_is_accepted_only_while_awaiting_it() -> None:
    assert review.approval_refusal(ALICE, True, Phase.AWAITING_APPROVAL, decided=False) == ""


@pytest.mark.parametrize(
    ("inp", "required", "phase", "decided", "says"),
    [
        (ApproveInput(" "), True, Phase.AWAITING_APPROVAL, False, "reviewer is required"),
        (ALICE, False, Phase.AWAITING_APPROVAL, False, "does not require approval"),
        (ALICE, True, Phase.AWAITING_APPROVAL, True, "already been approved or rejected"),
        (ALICE, True, Phase.APPROVAL_EXPIRED, False, "already ended (ApprovalExpired)"),
        (ALICE, True, Phase.EMAILING, False, "not ready for review (phase Emailing)"),
    ],
)
def test_refusals_say_why(
    inp: ApproveInput, required: bool, phase: Phase, decided: bool, says: str
) -> None:
    assert says in review.approval_refusal(inp, required, phase, decided)


def test_the_wait_ends_by_rejection_approval_or_timeout() -> None:
    rejected = review.outcome(None, RejectInput("carol", "thin"), 60)
    assert rejected == review.Outcome(Phase.REJECTED, "carol", "rejected: thin")
    assert review.outcome(ApproveInput(" bob "), None, 60) == review.Outcome(None, "bob")
    expired = review.outcome(None, None, 7 * 24 * 3600)
    assert expired == review.Outcome(Phase.APPROVAL_EXPIRED, "", "no approval within 168h")
    assert Phase.APPROVAL_EXPIRED.terminal


def test_a_cancelled_run_says_what_of_its_report_is_left() -> None:
    assert review.cancel_message("", mailed=False, email="") == "cancelled"
    held = review.cancel_message("r-1", mailed=False, email="skipped")
    assert "saved as report r-1" in held
    assert "no review mail was sent" in held
    late = review.cancel_message("r-1", mailed=True, email="sent")
    assert "saved as report r-1" in late
    assert "email sent" in late
    assert "no review mail" not in late

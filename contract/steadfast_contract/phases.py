"""Where a research run is: its phases, which are terminal, and the step of each.

The phase is the one word every reader of a run shows (the ``status`` query, the
ResearchAgent's ``status.runs``, ``steadfast status``, the chaos driver), so it is
defined once, here; :mod:`.models` re-exports it with the rest of the wire types.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class Phase(StrEnum):
    """Where a research run is. Terminal phases end with the workflow."""

    PENDING = "Pending"
    GENERATING_QUERIES = "GeneratingQueries"
    SEARCHING = "Searching"
    RESEARCHING = "Researching"
    """``deep``: Claude's tool-use loop (turn n of maxTurns, in ``RunStatus.turn``)."""
    WRITING = "Writing"
    SAVING = "Saving"
    AWAITING_APPROVAL = "AwaitingApproval"
    AWAITING_BUDGET = "AwaitingBudget"
    """The next LLM call does not fit the run's or the day's budget: paused before it,
    resumable by a raise (``steadfast budget``, a spec edit) or the next UTC day, for at
    most ``budget.pauseTimeout``. The run keeps the step it paused in."""
    EMAILING = "Emailing"
    COMPLETED = "Completed"
    REJECTED = "Rejected"
    APPROVAL_EXPIRED = "ApprovalExpired"
    """Nobody approved or rejected the saved report within ``notify.approvalTimeout``."""
    BUDGET_EXHAUSTED = "BudgetExhausted"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        Phase.COMPLETED,
        Phase.REJECTED,
        Phase.APPROVAL_EXPIRED,
        Phase.BUDGET_EXHAUSTED,
        Phase.FAILED,
        Phase.CANCELLED,
    }
)

#: The pipeline step (``RunStatus.step``) of each working phase, in the order the
#: workflow goes through them. Waiting for approval belongs to step 4: the report is
#: saved and not yet mailed. The workflow reports these; the chaos driver reads them.
#: ``AwaitingBudget`` has no step of its own: a run pauses there before an LLM call of
#: step 1, 2 or 3 and keeps that step (``STEP_OF_PHASE.get(phase, status.step)``).
STEP_OF_PHASE: Final[Mapping[Phase, int]] = MappingProxyType(
    {
        Phase.GENERATING_QUERIES: 1,
        Phase.SEARCHING: 2,
        Phase.RESEARCHING: 2,
        Phase.WRITING: 3,
        Phase.SAVING: 4,
        Phase.AWAITING_APPROVAL: 4,
        Phase.EMAILING: 5,
    }
)
TOTAL_STEPS: Final = max(STEP_OF_PHASE.values())

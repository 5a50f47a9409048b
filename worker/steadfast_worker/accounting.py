"""What a run has spent and done, added up from what its activities report.

Pure functions of the run's :class:`~steadfast_contract.models.RunStatus` and an
activity's output or failure details, used by the deterministic workflow code
(imported through the sandbox's pass-through): the ``status`` query and the result
carry the figures a user is billed for, failed attempts included.

They also keep what durability saved (docs/deep-agent.md, "What durability
saved"). Each attempt of a step beyond the first is an interruption -- a worker
lost mid-call or an attempt that failed -- after which a script restarted from
scratch would have paid again for every LLM call already finished. The run
resumes instead, so that spend, ``finished_usd`` at the moment the step began,
is counted as avoided.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from steadfast_contract.activities import LlmCall
from steadfast_contract.models import MAX_INTERRUPTIONS_KEPT, Interruption, RunStatus


def add_llm(status: RunStatus, call: LlmCall, attempt: int, activity: str = "") -> None:
    """Count an LLM activity that succeeded on ``attempt``, with its failed spend."""
    add_attempts(status, activity, attempt, llm=True)
    status.cost_usd += call.cost_usd + call.failed_cost_usd
    status.input_tokens += (
        call.usage.input_tokens + call.usage.cache_read_tokens + call.usage.cache_write_tokens
    )
    status.output_tokens += call.usage.output_tokens
    status.llm_calls += call.calls
    status.reserved_usd = 0.0
    status.finished_usd += call.cost_usd
    status.finished_calls += 1 if call.calls else 0


def add_attempts(status: RunStatus, activity: str, attempt: int, *, llm: bool = False) -> None:
    """Count a step that ended on ``attempt``: its retries, and what resuming saved.

    Call it before the step's own spend is added: a restart would re-pay only the
    calls finished before the step (``llm``: the step is an LLM call, numbered next).
    """
    lost = max(attempt - 1, 0)
    status.retries += lost
    if not lost:
        return
    avoided = lost * status.finished_usd
    status.avoided_usd += avoided
    status.calls_not_repeated += lost * status.finished_calls
    call = status.finished_calls + (1 if llm else 0)
    status.interruptions.append(Interruption(activity, call, lost, status.finished_calls, avoided))
    del status.interruptions[:-MAX_INTERRUPTIONS_KEPT]


def add_failure(status: RunStatus, details: Mapping[str, Any], activity: str = "") -> None:
    """Count an activity that failed for good, from the details its failure carried."""
    status.cost_usd += float(details.get("failed_cost_usd", 0.0))
    status.llm_calls += int(details.get("calls", 0))
    add_attempts(status, activity, int(details.get("attempt", 1)))

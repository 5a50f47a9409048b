"""What a run has spent and done, added up from what its activities report.

Pure functions of the run's :class:`~steadfast_contract.models.RunStatus` and an
activity's output or failure details, used by the deterministic workflow code
(imported through the sandbox's pass-through): the ``status`` query and the result
carry the figures a user is billed for, failed attempts included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from steadfast_contract.activities import LlmCall
from steadfast_contract.models import RunStatus


def add_llm(status: RunStatus, call: LlmCall, attempt: int) -> None:
    """Count an LLM activity that succeeded on ``attempt``, with its failed spend."""
    status.cost_usd += call.cost_usd + call.failed_cost_usd
    status.input_tokens += (
        call.usage.input_tokens + call.usage.cache_read_tokens + call.usage.cache_write_tokens
    )
    status.output_tokens += call.usage.output_tokens
    status.llm_calls += call.calls
    status.retries += attempt - 1
    status.reserved_usd = 0.0


def add_failure(status: RunStatus, details: Mapping[str, Any]) -> None:
    """Count an activity that failed for good, from the details its failure carried."""
    status.cost_usd += float(details.get("failed_cost_usd", 0.0))
    status.llm_calls += int(details.get("calls", 0))
    status.retries += max(int(details.get("attempt", 1)) - 1, 0)

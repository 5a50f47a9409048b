"""The run's review-request mail step, and whether it needs an activity at all.

docs/design.md §3: a mail goes out at most once per run; the ``send_email``
activity's claim in the report store makes a re-run attempt answer "unknown"
instead of resending. A run whose agent names no recipients ends with email
``skipped``: the run decides that from its input (``RunSettings.mail_recipients``)
rather than scheduling an activity that could only say so -- three activity
events and a workflow task fewer. Runs recorded before (and runs an older worker
took past this step) replay as they ran, by :data:`LEAN_RUN_PATCH`.

Deterministic workflow code: imported by the workflow inside the sandbox.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from steadfast_contract import activities as act
    from steadfast_contract.models import LEAN_SHAPE, ResearchInput, RetryPolicySpec, RunStatus
    from steadfast_worker import accounting

LEAN_RUN_PATCH = "lean-run"
"""The ``workflow.patched`` id of the run that costs Temporal less: no ``send_email``
without recipients. It also stands for ``SPEND_MEMO_PATCH`` (the memo upserts, see
:func:`.budgeting.publish_spend`), so a run records one patch marker, not two; older
runs replay on the id they carry."""

#: A send_email attempt lost with its worker is re-run this many times; the
#: database claim makes that safe (it answers "unknown" instead of resending).
EMAIL_LOST_WORKER_RERUNS = 2

Execute = Callable[[str, Any, type[Any], RetryPolicySpec, timedelta], Awaitable[Any]]
"""How the workflow runs an activity: name, argument, result type, policy, timeout."""


def lean(inp: ResearchInput) -> bool:
    """Whether this run has the lean shape: its input says so (every run started on
    this code), or it was recorded under the ``lean-run`` patch."""
    return inp.settings.shape >= LEAN_SHAPE or workflow.patched(LEAN_RUN_PATCH)


async def send_review(
    inp: ResearchInput,
    status: RunStatus,
    markdown: str,
    execute: Execute,
    start_to_close: timedelta,
) -> None:
    """Mail the review request, or record why not, in ``status.email``."""
    if not inp.settings.mail_recipients and lean(inp):
        status.email = "skipped"
        return
    info = workflow.info()
    request = act.SendEmailInput(
        info.workflow_id,
        inp.topic,
        status.report_id,
        markdown[:1500],
        status.reviewer,
        inp.agent,
        inp.namespace,
        info.run_id,
    )
    for rerun in range(EMAIL_LOST_WORKER_RERUNS + 1):
        try:
            sent = await execute(
                act.SEND_EMAIL,
                request,
                act.SendEmailOutput,
                inp.settings.retry_policies.email,
                start_to_close,
            )
        except ActivityError as err:
            lost = isinstance(err.cause, TimeoutError)
            if lost and rerun < EMAIL_LOST_WORKER_RERUNS:
                accounting.add_attempts(status, act.SEND_EMAIL, 2)
                continue
            status.email = "failed"
            raise
        accounting.add_attempts(status, act.SEND_EMAIL, sent.attempt)
        status.email = sent.email
        if sent.email == "unknown":
            status.message = f"email outcome unknown: {sent.message}"
        return

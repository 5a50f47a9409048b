"""A worker serves its own agent's runs only, whoever else polls its task queue.

A worker runs every activity with its own agent's credentials and places: its
model key pays for the request, its store keeps the report, its recipients get
the mail. Two agents whose workers poll one task queue (a custom
``spec.temporal.taskQueue`` both name, or a new agent naming another's legacy
``steadfast-<namespace>-<agent>`` queue) would take each other's activities: one
team's key paying for the other's run, its report saved in the other's database
and mailed to the other's recipients. The operator refuses a queue it can see
another agent using; this guard covers what it cannot see (agents in namespaces
it does not watch, another installation on the same Temporal namespace).

Every activity a research workflow schedules carries its agent in a header
(:data:`OWNER_HEADER`: ``<namespace>/<agent>``, neither of which can hold a
``/``), set by a workflow interceptor from the run's input; the worker's activity
interceptor refuses a task whose header names another agent before the activity
runs: no request sent, no store touched, no heartbeat (so what earlier attempts
carried in theirs stays for the next one). The refusal is retryable, so a retry
can reach the right agent's worker; if none does, the run fails saying which
queue is shared. A task without the header (scheduled by a release before it) is
served as before. The decision is :func:`refusal`, a pure function.
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio import activity
from temporalio.converter import PayloadConverter
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from steadfast_contract.errortypes import OTHER_AGENTS_TASK
from steadfast_contract.models import ResearchInput
from steadfast_worker.activities.base import FailureDetailsFactory
from steadfast_worker.activities.heartbeat import Carried

log = logging.getLogger(__name__)

OWNER_HEADER = "steadfast-agent"
"""The header naming the agent whose run scheduled an activity."""


def owner(namespace: str, agent: str) -> str:
    """How :data:`OWNER_HEADER` names an agent."""
    return f"{namespace}/{agent}"


def refusal(own: str, theirs: str | None, task_queue: str) -> str | None:
    """Why a worker of agent ``own`` must not run a task of agent ``theirs`` taken
    from ``task_queue``, or None when it may (its own, or a task that names nobody)."""
    if theirs is None or theirs == own:
        return None
    return (
        f"task queue {task_queue!r} is shared by two agents: this worker serves {own} "
        f"and the task belongs to {theirs}; refused so that {own}'s credentials, store "
        "and recipients never serve another agent's run. Give each agent its own "
        "spec.temporal.taskQueue"
    )


class AgentGuard(Interceptor):
    """The worker interceptor: workflows name their agent on the activities they
    schedule, and activities of another agent are refused."""

    def __init__(self, namespace: str, agent: str) -> None:
        self._own = owner(namespace, agent)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _RefuseOthers(next, self._own)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _NameOwner


class _RefuseOthers(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, own: str) -> None:
        super().__init__(next)
        self._own = own

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        header = input.headers.get(OWNER_HEADER)
        theirs = None if header is None else PayloadConverter.default.from_payload(header, str)
        info = activity.info()
        why = refusal(self._own, theirs, info.task_queue)
        if why is not None:
            log.error("%s (%s of %s)", why, info.activity_type, info.workflow_id)
            # What earlier attempts carried, so a run whose last attempt this is
            # still counts their spend (the heartbeat details are left as they were).
            details = FailureDetailsFactory(Carried.from_info())()
            raise ApplicationError(why, details, type=OTHER_AGENTS_TASK)
        return await super().execute_activity(input)


class _NameOwner(WorkflowInboundInterceptor):
    """Per workflow run: reads the agent from a research run's input."""

    owner: str | None = None

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_AddOwner(outbound, self))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        first = input.args[0] if input.args else None
        if isinstance(first, ResearchInput):
            self.owner = owner(first.namespace, first.agent)
        return await super().execute_workflow(input)


class _AddOwner(WorkflowOutboundInterceptor):
    def __init__(self, next: WorkflowOutboundInterceptor, root: _NameOwner) -> None:
        super().__init__(next)
        self._root = root

    def start_activity(self, input: StartActivityInput) -> Any:
        if self._root.owner is not None:
            named = PayloadConverter.default.to_payload(self._root.owner)
            input.headers = {**input.headers, OWNER_HEADER: named}
        return super().start_activity(input)

"""An agent's Temporal Schedules: one per topic when ``spec.schedule`` is set.

Each Schedule starts the topic's workflow on the cron (runs get
``<workflow id>-<timestamp>`` ids), skips a tick while the previous run is still
going, and is paused while the day's budget is spent. Which Schedules to
create, update, pause or delete is the planner's decision
(:mod:`steadfast_operator.planner`); this module only performs it.
"""

from __future__ import annotations

from collections.abc import Iterable

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from steadfast_contract import ids, models, starter
from steadfast_contract.config import WorkerConfig


def schedule_id(workflow_id: str) -> str:
    """One Schedule per topic; its runs get ``<workflow_id>-<timestamp>`` ids."""
    return f"{workflow_id}-schedule"


def _schedule(cfg: WorkerConfig, topic: str, cron: str, paused: bool, note: str) -> Schedule:
    wf_id = ids.workflow_id(cfg.namespace, cfg.agent, topic)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            models.WORKFLOW_NAME,
            starter.research_input(cfg, topic),
            id=wf_id,
            task_queue=cfg.task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[cron]),
        # A topic whose previous run is still going is skipped, never doubled up.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(paused=paused, note=note),
    )


async def upsert(
    client: Client, cfg: WorkerConfig, topics: Iterable[str], cron: str, paused: bool
) -> None:
    """Create or update one Schedule per topic; ``paused`` holds them while the day's
    budget is spent."""
    note = "paused by steadfast: daily budget reached" if paused else "managed by steadfast"
    for topic in topics:
        wf_id = ids.workflow_id(cfg.namespace, cfg.agent, topic)
        desired = _schedule(cfg, topic, cron, paused, note)
        try:
            await client.create_schedule(schedule_id(wf_id), desired)
        except ScheduleAlreadyRunningError:
            handle = client.get_schedule_handle(schedule_id(wf_id))

            def _update(_: ScheduleUpdateInput, s: Schedule = desired) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=s)

            await handle.update(_update)


async def delete(client: Client, cfg: WorkerConfig, topics: Iterable[str]) -> None:
    """Delete the Schedules of ``topics``; one already gone is not an error."""
    for topic in topics:
        await _delete_schedule(
            client, schedule_id(ids.workflow_id(cfg.namespace, cfg.agent, topic))
        )


async def _delete_schedule(client: Client, sched_id: str) -> None:
    try:
        await client.get_schedule_handle(sched_id).delete()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise

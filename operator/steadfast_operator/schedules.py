"""An agent's Temporal Schedules: one per topic when ``spec.schedule`` is set.

Each Schedule starts the topic's workflow on the cron (runs get
``<workflow id>-<timestamp>`` ids), skips a tick while the previous run is still
going, and is paused while the day's budget is spent. A topic's first run is
started through its Schedule too (:func:`trigger`): the Schedule sees only its own
runs, and would not skip for one started beside it. Which Schedules to
create, update, pause or delete is the planner's decision
(:mod:`steadfast_operator.planner`); this module only performs it.

The agent's Schedules are found in Temporal (:func:`find`), not from its status,
which lists a bounded number of runs: a topic removed long ago still has its
Schedule deleted. The list is read by id prefix; an id the agent's current or
listed topics do not explain is the agent's only if the topic in its action's
input derives that exact id (:func:`owned`): the prefix alone also matches an
agent whose name extends this one's (``news``, ``news-eu``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleInfo,
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

log = logging.getLogger(__name__)

SUFFIX = ids.schedule_id("")
schedule_id = ids.schedule_id


def topic_schedule_id(cfg: WorkerConfig, topic: str) -> str:
    return schedule_id(ids.workflow_id(cfg.namespace, cfg.agent, topic))


def owned(sched_id: str, namespace: str, agent: str, action_input: object) -> str | None:
    """The topic of a listed Schedule if it is this agent's, from its action's input."""
    if not isinstance(action_input, models.ResearchInput):
        return None
    if (action_input.namespace, action_input.agent) != (namespace, agent):
        return None
    wanted = schedule_id(ids.workflow_id(namespace, agent, action_input.topic))
    return action_input.topic if wanted == sched_id else None


def _schedule(cfg: WorkerConfig, topic: str, cron: str, paused: bool, note: str) -> Schedule:
    wf_id = ids.workflow_id(cfg.namespace, cfg.agent, topic)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            models.WORKFLOW_NAME,
            starter.research_input(cfg, topic),
            id=wf_id,
            task_queue=cfg.task_queue,
            task_timeout=models.WORKFLOW_TASK_TIMEOUT,
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


#: How long :func:`trigger` waits for a Schedule to take the action it was asked for.
TRIGGER_WAIT_SECONDS = 10.0


async def trigger(client: Client, cfg: WorkerConfig, topics: Iterable[str]) -> list[str]:
    """Start each topic's first run through its Schedule, now; the topics that have no
    Schedule (the caller starts those itself).

    A Schedule skips a tick while a run it started is going, and sees only its own
    runs: a first run started beside it (``<workflow id>``) would run on while the
    first tick started a second run of the topic, paid for again. Started by the
    Schedule, the first run is one the ticks skip for. A Schedule takes a triggered
    action a moment later; this returns once each has (or ``TRIGGER_WAIT_SECONDS``
    passed), so a pass that removes the topic next finds the run to cancel."""
    missing: list[str] = []
    asked: list[tuple[ScheduleHandle, int]] = []
    for topic in topics:
        handle = client.get_schedule_handle(topic_schedule_id(cfg, topic))
        try:
            before = _actions_taken((await handle.describe()).info)
            await handle.trigger()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            missing.append(topic)
            continue
        asked.append((handle, before))
    deadline = asyncio.get_running_loop().time() + TRIGGER_WAIT_SECONDS
    for handle, before in asked:
        while _actions_taken((await handle.describe()).info) <= before:
            if asyncio.get_running_loop().time() > deadline:
                log.warning("Schedule %s has not started its triggered run yet", handle.id)
                break
            await asyncio.sleep(0.1)
    return missing


def _actions_taken(info: ScheduleInfo) -> int:
    """Actions a Schedule took or skipped for an overlap: one more after a trigger."""
    return info.num_actions + info.num_actions_skipped_overlap


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


async def find(client: Client, cfg: WorkerConfig, known: Iterable[str]) -> dict[str, str]:
    """The agent's Schedules in Temporal: Schedule id -> topic.

    ``known`` topics (the spec's, the status's) are recognised by id; any other
    id with the agent's prefix is described once to read the topic it runs.
    """
    by_id = {topic_schedule_id(cfg, t): t for t in known}
    prefix = ids.workflow_id_prefix(cfg.namespace, cfg.agent)
    found: dict[str, str] = {}
    async for listed in await client.list_schedules():
        sched_id = listed.id
        if not (sched_id.startswith(prefix) and sched_id.endswith(SUFFIX)):
            continue
        if sched_id in by_id:
            found[sched_id] = by_id[sched_id]
            continue
        topic = await _topic_of(client, cfg, sched_id)
        if topic is not None:
            found[sched_id] = topic
    return found


async def _topic_of(client: Client, cfg: WorkerConfig, sched_id: str) -> str | None:
    try:
        desc = await client.get_schedule_handle(sched_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None  # deleted since it was listed
        raise
    action = desc.schedule.action
    if not isinstance(action, ScheduleActionStartWorkflow) or not action.args:
        return None
    try:
        (first,) = await client.data_converter.decode(
            [action.args[0]],
            [models.ResearchInput],
        )
    except Exception:  # another tool's Schedule with an input this one cannot read
        log.debug("Schedule %s: input is not a ResearchInput", sched_id)
        return None
    return owned(sched_id, cfg.namespace, cfg.agent, first)

"""``steadfast run``: start research runs on any Temporal, idempotently.

The workflow id is derived from the agent and topic, so running the same command
twice never starts a second run of a topic that is already running; a topic that
already finished is re-researched only with ``--rerun``. Workers are not started
here: any worker polling the agent's task queue (``steadfast worker``, a pod the
operator manages, ``steadfast dev``) picks the runs up.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from rich.console import Console
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from steadfast_cli import display
from steadfast_cli.commands._agents import (
    add_agent_arguments,
    agent_from_args,
    connect_or_explain,
)
from steadfast_cli.display import RunsView
from steadfast_cli.errors import refuse, say
from steadfast_cli.safetext import shown
from steadfast_contract import starter
from steadfast_contract.config import ConfigError, TemporalConfig, WorkerConfig
from steadfast_worker.connection import add_connection_arguments, temporal_config_from_args

HELP = "start a ResearchAgent's topics (or --topic) as durable workflows"


def configure(parser: argparse.ArgumentParser) -> None:
    add_agent_arguments(parser)
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="research again topics whose workflow already finished (running ones are reused)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait for the runs, report each as it closes, then print their table"
        " (exit 1 unless every run completed)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="print the report text live as it is written (one topic), then wait; a deep"
        " run's turns each under a line: turn n/N, tool calls and cost so far",
    )
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    console = display.console()
    try:
        cfg, topics = agent_from_args(args)
    except ConfigError as err:
        return refuse("run", err)
    if not topics:
        return refuse("run", "no topics: give -f with spec.topics, or --topic")
    if args.follow and len(topics) != 1:
        return refuse("run", "--follow follows one topic; give exactly one")
    temporal = temporal_config_from_args(args, cfg.temporal.namespace)
    return asyncio.run(_run(args, console, cfg, topics, temporal))


async def _run(
    args: argparse.Namespace,
    console: Console,
    cfg: WorkerConfig,
    topics: list[str],
    temporal: TemporalConfig,
) -> int:
    client = await connect_or_explain(temporal, console, "run")
    if isinstance(client, int):
        return client
    try:
        started = [await starter.start_topic(client, cfg, t, rerun=args.rerun) for t in topics]
    except ConfigError as err:
        return refuse("run", err)
    for s in started:
        verb = "reused" if s.existing else "started"
        console.print(
            f"{verb} [bold]{shown(s.workflow_id)}[/bold] (run {s.run_id}) · {shown(s.topic)}"
        )
    console.print(f"task queue: {shown(cfg.task_queue)}")
    if not await _polled(client, cfg.task_queue):
        console.print(
            f"[yellow]no worker polls task queue {shown(cfg.task_queue)}:[/yellow] the run waits "
            "until one does. Start the agent's workers (`steadfast dev -f FILE`, or its "
            "Deployment), or give -f/--config for the agent whose workers poll another queue."
        )
    if args.follow:
        from steadfast_cli.follow import follow_report

        first = started[0]

        async def heading(turn: int) -> str:
            row = await starter.describe_run(client, first.workflow_id, first.topic)
            return display.turn_heading(row, turn)

        try:
            await follow_report(client, first.workflow_id, sys.stdout, heading)
        except (RPCError, WorkflowQueryFailedError) as err:
            # A closed run's report is read by a query, which only a worker answers.
            say("run", f"could not follow the report of {first.workflow_id}: {err}")
            console.print(
                "the report stream needs a worker of the agent to answer; "
                f"`steadfast report {shown(first.workflow_id)}` reads a saved report from "
                "the store"
            )
            return 1
    if not (args.wait or args.follow):
        return 0
    rows = await _wait_all(client, started, console)
    console.print(RunsView(rows))
    return 0 if all(r.phase == "Completed" for r in rows) else 1


async def _polled(client: Client, task_queue: str) -> bool:
    """Whether a worker polled ``task_queue`` lately (True when the server will not say)."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    try:
        found = await client.workflow_service.describe_task_queue(request)
    except RPCError:
        return True
    return bool(found.pollers)


async def _wait_all(
    client: Client, started: list[starter.Started], console: Console
) -> list[starter.RunRow]:
    """Wait for every run at once, saying as each one closes; rows in start order."""

    async def closed(s: starter.Started) -> starter.RunRow:
        await starter.wait_closed(client, s.workflow_id)
        return await starter.describe_run(client, s.workflow_id, s.topic)

    tasks = [asyncio.create_task(closed(s)) for s in started]
    if len(tasks) > 1:
        console.print(f"waiting for {len(tasks)} runs")
        for n, next_closed in enumerate(asyncio.as_completed(tasks), 1):
            row = await next_closed
            console.print(f"closed {n}/{len(tasks)}: {shown(row.workflow_id)} {shown(row.phase)}")
    return [await t for t in tasks]

"""``steadfast status``: a table of research runs, from the workflows themselves.

Runs are named by workflow id, by a ResearchAgent manifest (its topics' ids),
or not at all (the most recent ResearchWorkflow executions). Running workflows
answer the ``status`` query; finished ones are described from their result or
failure, so the table works even when no worker is running. Below the table, a
run that lost a worker or retried an attempt says where, and what resuming instead
of restarting did not pay again.

``--reports`` also lists every report the shown workflow ids' runs saved (a
re-run keeps the earlier ones), read from the report store (see
:mod:`steadfast_cli.commands._reports`; ``--state-dir`` names a ``steadfast dev``'s).
When Temporal cannot be reached (a ``steadfast dev`` that has stopped), the named
runs' reports are still listed from the store, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import asyncio

from rich.console import Console
from temporalio.client import Client

from steadfast_cli import display
from steadfast_cli.commands._agents import (
    add_agent_arguments,
    agent_from_args,
    connect_or_explain,
)
from steadfast_cli.commands._reports import add_store_arguments, show_reports, store_from_args
from steadfast_cli.display import RunsView, progress_line
from steadfast_cli.errors import refuse
from steadfast_cli.safetext import shown
from steadfast_contract import ids, models, starter
from steadfast_contract.config import ConfigError, StorageConfig, TemporalConfig
from steadfast_worker.connection import add_connection_arguments, temporal_config_from_args

HELP = (
    "show research runs: phase, report id, LLM calls, retries, cost, and the spend resuming"
    " saved (what a restart from scratch would have re-paid)"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow_ids", nargs="*", metavar="WORKFLOW_ID", help="runs to show")
    add_agent_arguments(parser)
    parser.add_argument(
        "--limit", type=int, default=20, help="how many recent runs to list when none are named"
    )
    parser.add_argument(
        "--watch", action="store_true", help="refresh until every shown run has finished"
    )
    parser.add_argument(
        "--reports",
        action="store_true",
        help="also list every report the shown workflow ids' runs saved, earlier runs'"
        " (--rerun) and the runs a Schedule started (<id>-<time>) included, from the"
        " report store: Postgres when the variable"
        " storage.postgresDsnEnv names is set (default STEADFAST_POSTGRES_DSN), else the"
        " SQLite file storage.sqlitePath (default .steadfast/reports.db, as `steadfast dev`);"
        " both from -f/--config; or that of a `steadfast dev --state-dir DIR` with --state-dir."
        " Listed even when Temporal cannot be reached (exit 1), for runs named by id or -f",
    )
    add_store_arguments(parser)
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    console = display.console()
    targets: list[tuple[str, str]] = [(wf_id, "") for wf_id in args.workflow_ids]
    storage = StorageConfig()
    namespace = "default"  # Temporal's, unless the agent's manifest names another
    if args.file or args.config or args.topic:
        try:
            cfg, topics = agent_from_args(args)
        except ConfigError as err:
            return refuse("status", err)
        targets += [(ids.workflow_id(cfg.namespace, cfg.agent, t), t) for t in topics]
        storage, namespace = cfg.storage, cfg.temporal.namespace
    storage = store_from_args(args, storage)
    targets = once_each(targets)
    temporal = temporal_config_from_args(args, namespace)
    return asyncio.run(_status(args, console, targets, temporal, storage))


def once_each(targets: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each workflow id once, in the order first named, with the topic a manifest gave it:
    a run named both by id and by its agent's manifest (or twice) is one row, and its
    cost is counted once in the totals."""
    topics: dict[str, str] = {}
    for wf_id, topic in targets:
        topics[wf_id] = topics.get(wf_id) or topic
    return list(topics.items())


async def recent_runs(client: Client, limit: int) -> list[tuple[str, str]]:
    """The newest ResearchWorkflow executions, newest first, one per workflow id."""
    seen: dict[str, str] = {}
    query = f"WorkflowType = '{models.WORKFLOW_NAME}'"
    async for execution in client.list_workflows(query, limit=limit * 3):
        if execution.id not in seen:
            seen[execution.id] = ""
        if len(seen) >= limit:
            break
    return list(seen.items())


async def describe_all(
    client: Client, targets: list[tuple[str, str]], concurrency: int = 10
) -> list[starter.RunRow]:
    """Rows for many runs at once: a closed run with no worker to query costs a timeout."""
    gate = asyncio.Semaphore(concurrency)

    async def one(wf_id: str, topic: str) -> starter.RunRow:
        async with gate:
            return await starter.describe_run(client, wf_id, topic)

    return list(await asyncio.gather(*(one(w, t) for w, t in targets)))


async def _status(
    args: argparse.Namespace,
    console: Console,
    targets: list[tuple[str, str]],
    temporal: TemporalConfig,
    storage: StorageConfig,
) -> int:
    client = await connect_or_explain(temporal, console, "status")
    if isinstance(client, int):
        if client == 1 and args.reports and targets:  # a stopped dev's: no Temporal needed
            await show_reports(console, storage, [w for w, _ in targets])
        return client
    if not targets:
        targets = await recent_runs(client, args.limit)
        if not targets:
            console.print("no research runs found")
            return 0
    while True:
        rows = await describe_all(client, targets)
        console.print(RunsView(rows))
        for row in rows:
            if row.message:
                console.print(f"[dim]{shown(row.workflow_id)}:[/dim] {shown(row.message)}")
            for line in display.saved_lines(row):
                console.print(f"[dim]{shown(row.workflow_id)}:[/dim] {line}")
        if not args.watch or all(r.terminal for r in rows):
            break
        for row in rows:
            if not row.terminal:
                console.print(f"{shown(row.workflow_id)}: {progress_line(row)}")
        await asyncio.sleep(2.0)
    if args.reports and not await show_reports(console, storage, [w for w, _ in targets]):
        return 1
    return 1 if any(r.phase == "NotFound" for r in rows) else 0

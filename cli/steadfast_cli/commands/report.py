"""``steadfast report ID``: print a saved report's text.

``dev``, ``run`` and ``status`` show a report's id and cost, never its text, and
the text is in the report store (a SQLite file, or Postgres), where a user had to
open it with a database client. This verb prints it: the markdown alone on
standard output (``steadfast report ID > report.md``), nothing else there.

A verb of its own rather than a ``status`` option: ``status`` asks Temporal about
runs, while a report outlives its run's retention and a stopped ``steadfast
dev``, so this reads the store only and needs no Temporal. The store is found
as ``status --reports`` finds it (``--state-dir``, ``-f``/``--config``; see
:mod:`steadfast_cli.commands._reports`). The model read pages anyone can write:
its control characters are shown, not sent (:mod:`steadfast_cli.safetext`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from steadfast_cli.commands._reports import add_store_arguments, open_reports, store_from_args
from steadfast_cli.errors import EXIT_BAD_INPUT, refuse, say
from steadfast_cli.safetext import printable
from steadfast_contract import agentfile
from steadfast_contract.config import ConfigError, StorageConfig, load_config
from steadfast_worker.activities.storage import StoredReport

HELP = (
    "print a saved report's text (markdown) from the report store, by report id or "
    "workflow id; needs no Temporal"
)

EXIT_NOT_FOUND = 1
"""No saved report has that id, or there is no report store where it looked."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Exit status: 0 when the report was printed, "
        f"{EXIT_NOT_FOUND} when no saved report has that id (or no report store is where "
        f"it looked), {EXIT_BAD_INPUT} for bad input (an unreadable -f/--config)."
    )
    parser.add_argument(
        "id",
        metavar="ID",
        help="a report id (the Report ID column of `dev`, `run --wait` and `status`), or a "
        "workflow id, for the newest report its runs saved",
    )
    parser.add_argument(
        "-f",
        "--file",
        default="",
        help="ResearchAgent manifest whose storage settings say where its reports are",
    )
    parser.add_argument(
        "--config",
        default="",
        help="a worker configuration file (as `steadfast worker --config` takes) instead of -f",
    )
    add_store_arguments(parser)


def _storage(args: argparse.Namespace) -> StorageConfig:
    if args.file and args.config:
        raise ConfigError("give either -f/--file or --config, not both")
    if args.file:
        return agentfile.agent_from_manifest(agentfile.load_manifest(args.file)).config.storage
    if args.config:
        return load_config(args.config).storage
    return StorageConfig()


def run(args: argparse.Namespace) -> int:
    try:
        storage = store_from_args(args, _storage(args))
    except ConfigError as err:
        return refuse("report", err)
    return asyncio.run(_report(args.id, storage))


async def _report(wanted: str, storage: StorageConfig) -> int:
    opened = await open_reports(storage)
    if isinstance(opened, str):
        say("report", opened)
        return EXIT_NOT_FOUND
    store, where = opened
    try:
        found: StoredReport | None = await store.get_report(wanted)
        if found is None:
            runs = await store.list_reports(wanted)
            found = max(runs, key=lambda r: (r.created_at, r.report_id)) if runs else None
    finally:
        await store.close()
    if found is None:
        say(
            "report",
            f"no saved report has id {wanted!r} in {where} "
            "(a report id, or a workflow id; --state-dir names a `steadfast dev`'s store)",
        )
        return EXIT_NOT_FOUND
    text = printable(found.markdown)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0

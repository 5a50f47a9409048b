"""``steadfast status --reports``: every report a workflow id's runs saved, from the report store.

Temporal keeps a workflow's runs only for its namespace's retention, and
``status`` shows the latest run of each id; the report store keeps one report
per run for good (a re-run adds a row, never replaces one). This reads that
store the way the agent's workers write it: Postgres from the environment
variable ``storage.postgresDsnEnv`` names, else the SQLite file
``storage.sqlitePath`` (``.steadfast/reports.db``, where ``steadfast dev``
keeps them), both from ``-f``/``--config`` or their defaults; ``--state-dir D``
reads the SQLite file of a ``steadfast dev --state-dir D`` instead, found as
``dev`` finds it (:func:`steadfast_contract.config.dev_reports_path`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from steadfast_cli.display import format_cost
from steadfast_cli.safetext import shown
from steadfast_contract import credentials
from steadfast_contract.config import DEV_STATE_DIR, StorageConfig, dev_reports_path
from steadfast_worker.activities.storage import ReportStore, StoredReport, open_store


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """``--state-dir``: the report store of a ``steadfast dev --state-dir``."""
    parser.add_argument(
        "--state-dir",
        default="",
        metavar="DIR",
        help="read the reports a `steadfast dev --state-dir DIR` saved (DIR/reports.db), "
        "from any directory, while it runs or after; without it, storage.sqlitePath of "
        f"-f/--config, by default {DEV_STATE_DIR}/reports.db under the current directory "
        "(where `steadfast dev` keeps them without --state-dir). Postgres still wins when "
        "the variable storage.postgresDsnEnv names is set, as it does for dev's workers",
    )


def store_from_args(args: argparse.Namespace, storage: StorageConfig) -> StorageConfig:
    """``storage`` read from ``--state-dir``'s SQLite file when one is given."""
    if not args.state_dir:
        return storage
    return storage.model_copy(update={"sqlite_path": str(dev_reports_path(args.state_dir))})


def reports_table(workflow_id: str, reports: Sequence[StoredReport]) -> Table:
    """One workflow id's saved reports, oldest first: when, which run, which report, cost,
    size; and, when its Schedule started some of them, each one's scheduled time."""
    table = Table(title=f"Reports of {workflow_id}")
    scheduled = any(r.workflow_id != workflow_id for r in reports)
    table.add_column("Saved at (UTC)", no_wrap=True)
    if scheduled:
        table.add_column("Scheduled for", no_wrap=True)
    table.add_column("Run ID", no_wrap=True, overflow="fold")
    table.add_column("Report ID", no_wrap=True, overflow="fold")
    table.add_column("Cost (USD)", justify="right")
    table.add_column("Chars", justify="right")
    for r in reports:
        row = [r.created_at.replace("T", " ")[:19]]
        if scheduled:
            row.append(r.workflow_id.removeprefix(workflow_id).removeprefix("-") or "-")
        row += [r.run_id, r.report_id, format_cost(r.cost_usd), str(len(r.markdown))]
        table.add_row(*(shown(cell) for cell in row))
    return table


async def open_reports(storage: StorageConfig) -> tuple[ReportStore, str] | str:
    """The report store ``storage`` names and where that is (for messages); or, plain,
    why it cannot be read (never with the DSN)."""
    name = storage.postgres_dsn_env
    dsn = os.environ.get(name, "") if name else ""
    where = f"Postgres ({name})" if dsn else storage.sqlite_path
    if not dsn and not await asyncio.to_thread(Path(storage.sqlite_path).is_file):
        return f"no report database at {storage.sqlite_path} (set {name} for Postgres)"
    try:
        if dsn:
            credentials.check_url(dsn, ("postgresql", "postgres"), path_allowed=True)
        store = await open_store(dsn, storage.sqlite_path)
    except Exception as err:  # any failure is told, without the DSN
        told = credentials.scrub(f"{type(err).__name__}: {err}", credentials.secret_parts(dsn))
        return f"cannot read the reports in {where}: {told}"
    return store, where


async def show_reports(
    console: Console, storage: StorageConfig, workflow_ids: Sequence[str]
) -> bool:
    """Print each workflow id's reports; False (having said why) when the store cannot be read."""
    opened = await open_reports(storage)
    if isinstance(opened, str):
        console.print(f"[red]{shown(opened)}[/red]")
        return False
    store, where = opened
    try:
        for wf_id in workflow_ids:
            reports = await store.list_reports(wf_id)
            if reports:
                console.print(reports_table(wf_id, reports))
            else:
                console.print(f"{shown(wf_id)}: no saved reports in {shown(where)}")
    finally:
        await store.close()
    return True

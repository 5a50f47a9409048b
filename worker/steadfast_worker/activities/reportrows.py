"""What the report store hands back: a saved report's id, and a stored report's row.

Apart from :mod:`steadfast_worker.activities.storage` so that both backends (Postgres
there, SQLite in :mod:`steadfast_worker.activities.sqlitestore`) build the same
values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


def now_iso() -> str:
    """Now, as both stores write a timestamp."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class SavedReport:
    report_id: str
    created: bool


@dataclass(frozen=True)
class StoredReport:
    """One run's saved report, as :meth:`ReportStore.list_reports` returns it."""

    workflow_id: str
    run_id: str
    report_id: str
    agent: str
    namespace: str
    topic: str
    markdown: str
    cost_usd: float
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, row: Any) -> StoredReport:
        v = tuple(row)
        return cls(
            workflow_id=str(v[0]),
            run_id=str(v[1]),
            report_id=str(v[2]),
            agent=str(v[3]),
            namespace=str(v[4]),
            topic=str(v[5]),
            markdown=str(v[6]),
            cost_usd=float(v[7]),
            created_at=str(v[8]),
            updated_at=str(v[9]),
        )

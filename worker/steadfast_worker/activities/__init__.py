"""All I/O of a research run, as Temporal activities (one module per concern).

:class:`ResearchActivities` bundles them on one object per worker process, built
from the worker's configuration; :meth:`ResearchActivities.all` lists the
callables to register with a :class:`temporalio.worker.Worker`. Activity names
and dataclasses are in :mod:`steadfast_contract.activities`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from steadfast_worker.activities.deep import DeepActivities
from steadfast_worker.activities.mail import MailActivities
from steadfast_worker.activities.queries import QueriesActivities
from steadfast_worker.activities.report import ReportActivities
from steadfast_worker.activities.saving import SavingActivities
from steadfast_worker.activities.searchstep import SearchStepActivities


class ResearchActivities(
    QueriesActivities,
    SearchStepActivities,
    DeepActivities,
    ReportActivities,
    SavingActivities,
    MailActivities,
):
    """Every activity of ``ResearchWorkflow``, sharing one set of clients."""

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.generate_queries,
            self.web_search,
            self.web_searches,
            self.write_report,
            self.save_report,
            self.send_email,
            self.record_run,
            self.deep_turn,
            self.deep_tool,
        ]


__all__ = ["ResearchActivities"]

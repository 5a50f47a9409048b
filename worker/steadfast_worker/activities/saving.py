"""Activities ``save_report`` and ``record_run``: what a run leaves behind.

``save_report`` upserts the report keyed on the workflow id and run id (see
:mod:`~steadfast_worker.activities.storage`), so retries of one run leave exactly
one row and return its original report id, and each re-run of the same workflow
id keeps a report of its own next to the earlier ones.
``record_run`` counts the finished run in the worker's metrics.
"""

from __future__ import annotations

from temporalio import activity

from steadfast_contract.activities import (
    RECORD_RUN,
    SAVE_REPORT,
    RecordRunInput,
    SaveReportInput,
    SaveReportOutput,
)
from steadfast_worker.activities.base import ActivityBase


class SavingActivities(ActivityBase):
    @activity.defn(name=SAVE_REPORT)
    async def save_report(self, inp: SaveReportInput) -> SaveReportOutput:
        async with self.tracked(SAVE_REPORT):
            store = await self.store()
            saved = await store.save_report(
                workflow_id=inp.workflow_id,
                report_id=inp.report_id,
                run_id=inp.run_id,
                agent=inp.agent,
                namespace=inp.namespace,
                topic=inp.topic,
                markdown=inp.markdown,
                cost_usd=inp.cost_usd,
            )
            return SaveReportOutput(
                saved.report_id, saved.created, store.backend, activity.info().attempt
            )

    @activity.defn(name=RECORD_RUN)
    async def record_run(self, inp: RecordRunInput) -> None:
        """Run-level metrics, as a local activity: workflows cannot touch Prometheus,
        and a local activity's completion is recorded, so replays don't count twice."""
        self.metrics.record_run(self.labels, inp.phase, inp.cost_usd, inp.budget)

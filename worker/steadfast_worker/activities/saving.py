"""Activities ``save_report`` and ``record_run``: what a run leaves behind.

``save_report`` upserts the report keyed on the workflow id and run id (see
:mod:`~steadfast_worker.activities.storage`), so retries of one run leave exactly
one row and return its original report id, and each re-run of the same workflow
id keeps a report of its own next to the earlier ones. A deep run's save deletes
its transcript in the same transaction: the loop that read it is over, and the
report keeps the sources it cites.
``record_run`` counts the finished run in the worker's metrics: its phase, its
cost, and what resuming instead of restarting saved it.

A store that cannot be reached fails the attempt with ``DatabaseError``, naming
the store's error class in the message and in the ``storeError`` detail and
nothing else (a driver's text can carry the DSN's host, user or database): the
workflow keeps retrying and shows that class while it waits
(:mod:`steadfast_worker.savewait`). A misconfiguration stays non-retryable.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from steadfast_contract.activities import (
    RECORD_RUN,
    SAVE_REPORT,
    RecordRunInput,
    SaveReportInput,
    SaveReportOutput,
)
from steadfast_contract.errortypes import DATABASE_ERROR
from steadfast_worker import errors
from steadfast_worker.activities.base import ActivityBase
from steadfast_worker.savewait import STORE_ERROR


def store_unavailable(exc: BaseException) -> ApplicationError:
    """The retryable failure of a save the store could not take, naming only its class."""
    if isinstance(exc, ApplicationError) and exc.__cause__ is not None:
        exc = exc.__cause__  # the store's own error, under the credential wrapper
    name = (
        exc.type or errors.UNEXPECTED if isinstance(exc, ApplicationError) else type(exc).__name__
    )
    return ApplicationError(
        f"report store unavailable: {name}", {STORE_ERROR: name}, type=DATABASE_ERROR
    )


class SavingActivities(ActivityBase):
    @activity.defn(name=SAVE_REPORT)
    async def save_report(self, inp: SaveReportInput) -> SaveReportOutput:
        async with self.tracked(SAVE_REPORT):
            try:
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
                    conversation=inp.conversation,
                )
            except ApplicationError as err:
                if not errors.is_retryable(err):
                    raise
                raise store_unavailable(err) from None
            except Exception as exc:
                raise store_unavailable(exc) from None
            return SaveReportOutput(
                saved.report_id, saved.created, store.backend, activity.info().attempt
            )

    @activity.defn(name=RECORD_RUN)
    async def record_run(self, inp: RecordRunInput) -> None:
        """Run-level metrics, as a local activity: workflows cannot touch Prometheus,
        and a local activity's completion is recorded, so replays don't count twice."""
        self.metrics.record_run(
            self.labels, inp.phase, inp.cost_usd, inp.budget, inp.avoided_usd, inp.model
        )

"""A re-run keeps every run's report and mails once per run, on SQLite and Postgres.

``steadfast run --rerun`` starts a new run under the same workflow id. Each run
that reaches Saving leaves its own row (keyed by workflow id and run id), the
earlier rows stay as they were and are listed, a retried save of one run still
finds that run's row, and each run that reaches Emailing hands one mail to the
real SMTP server on loopback.
"""

from __future__ import annotations

import uuid

import pytest
from tests.integration.conftest import HarnessFactory

from steadfast_contract import starter
from steadfast_contract.models import Phase, ResearchResult

pytestmark = [pytest.mark.integration, pytest.mark.hostile]


def header(message: object, name: str) -> str:
    return " ".join(str(message[name]).split())  # type: ignore[index]


async def test_rerun_keeps_both_reports_and_mails_each_run_once(
    harness: HarnessFactory, backend_dsn: str
) -> None:
    topic = f"rerun keeps {uuid.uuid4().hex[:6]}"
    async with harness(postgres_dsn=backend_dsn) as h:
        first = await h.run(topic)
        assert first.status.phase == Phase.COMPLETED
        wf_id = h.workflow_id(topic)
        store = await h.store()
        try:
            assert await store.count_reports(wf_id) == 1

            # What `steadfast run --rerun` does: a new run under the same workflow id.
            started = await starter.start_topic(h.client, h.config, topic, rerun=True)
            assert started.workflow_id == wf_id
            assert not started.existing
            handle = h.client.get_workflow_handle(wf_id, result_type=ResearchResult)
            second = await handle.result()
            assert second.status.phase == Phase.COMPLETED
            assert second.status.email == "sent"
            assert second.status.report_id != first.status.report_id

            assert await store.count_reports(wf_id) == 2
            mails = h.smtp.messages_for(wf_id)
            assert len(mails) == 2
            assert sorted(header(m, "X-Steadfast-Report-Id") for m in mails) == sorted(
                [first.status.report_id, second.status.report_id]
            )

            listed = await store.list_reports(wf_id)
            assert [r.report_id for r in listed] == [
                first.status.report_id,
                second.status.report_id,
            ]
            # `steadfast report ID` reads one by its id, on either backend.
            assert await store.get_report(first.status.report_id) == listed[0]
            assert await store.get_report(second.status.report_id) == listed[1]
            assert await store.get_report(str(uuid.uuid4())) is None
            assert listed[0].run_id != listed[1].run_id
            assert listed[1].run_id == started.run_id
            for run_id in (listed[0].run_id, listed[1].run_id):
                assert await store.email_status(wf_id, run_id) == "sent"
        finally:
            await store.close()


async def test_first_report_is_unchanged_by_the_rerun(
    harness: HarnessFactory, backend_dsn: str
) -> None:
    topic = f"rerun unchanged {uuid.uuid4().hex[:6]}"
    async with harness(postgres_dsn=backend_dsn) as h:
        await h.run(topic)
        wf_id = h.workflow_id(topic)
        store = await h.store()
        try:
            before = await store.list_reports(wf_id)
            await starter.start_topic(h.client, h.config, topic, rerun=True)
            await h.client.get_workflow_handle(wf_id, result_type=ResearchResult).result()
            after = await store.list_reports(wf_id)
            assert len(before) == 1
            assert len(after) == 2
            assert after[0] == before[0]  # same id, run, text, cost and timestamps
        finally:
            await store.close()


async def test_retried_save_finds_its_own_runs_row(
    harness: HarnessFactory, backend_dsn: str
) -> None:
    """A save retried after its first attempt committed (a lost reply, a worker killed
    after the commit) returns that run's original report id and adds no row, even
    when a later run of the same workflow id has saved since."""
    wf_id = f"research-retry-{uuid.uuid4().hex[:8]}"
    async with harness(postgres_dsn=backend_dsn) as h:
        store = await h.store()
        try:

            async def save(run_id: str, report_id: str, markdown: str) -> tuple[str, bool]:
                # Report ids are unique across the database, which outlives this test.
                saved = await store.save_report(
                    workflow_id=wf_id,
                    report_id=f"{wf_id}-{report_id}",
                    run_id=run_id,
                    agent="itest",
                    namespace="itest-ns",
                    topic="retried save",
                    markdown=markdown,
                    cost_usd=0.01,
                )
                return saved.report_id.removeprefix(f"{wf_id}-"), saved.created

            assert await save("run-a", "report-a", "first") == ("report-a", True)
            assert await save("run-b", "report-b", "second") == ("report-b", True)
            # Retries propose the same id again (workflow.uuid4() replays); a fresh one
            # must not win either.
            assert await save("run-a", "report-a", "first") == ("report-a", False)
            assert await save("run-b", "report-b2", "second") == ("report-b", False)
            assert await store.count_reports(wf_id) == 2
            listed = await store.list_reports(wf_id)
            assert [(r.run_id, r.report_id, r.markdown) for r in listed] == [
                ("run-a", f"{wf_id}-report-a", "first"),
                ("run-b", f"{wf_id}-report-b", "second"),
            ]
        finally:
            await store.close()


async def test_a_topics_reports_include_the_runs_its_schedule_started(
    harness: HarnessFactory, backend_dsn: str
) -> None:
    """A Schedule's runs save under ``<workflow id>-<scheduled time>`` (Temporal names
    them so); ``status --topic T --reports`` lists the topic's reports by its id, and
    listed none of theirs. Ids that merely share the prefix stay apart, and ``_`` in an
    id is no wildcard."""
    base = f"research-sched_{uuid.uuid4().hex[:8]}"
    ids_saved = [
        base,
        f"{base}-2026-12-01T02:41:34Z",  # a scheduled run
        f"{base}-2026-12-02T02:41:34Z",  # the next one
        f"{base}-other-topic-4f2a",  # another topic whose id begins alike
        f"{base.replace('_', 'x')}-2026-12-01T02:41:34Z",  # `_` as a wildcard would match
    ]
    async with harness(postgres_dsn=backend_dsn) as h:
        store = await h.store()
        try:
            for n, wf_id in enumerate(ids_saved):
                await store.save_report(
                    workflow_id=wf_id,
                    report_id=f"{base}-report-{n}",
                    run_id=f"run-{n}",
                    agent="itest",
                    namespace="itest-ns",
                    topic="scheduled topic",
                    markdown=f"report {n}",
                    cost_usd=0.01,
                )
            listed = await store.list_reports(base)
        finally:
            await store.close()
    assert [r.workflow_id for r in listed] == ids_saved[:3]

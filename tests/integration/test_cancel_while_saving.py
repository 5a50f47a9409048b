"""A run cancelled while it saves its paid report saves it, and mails nobody.

A cancel does not stop the save of a report already paid for (docs/design.md §3):
the run stays in ``Saving`` until its store answers. It used to go on from there
as if nobody had cancelled it: it mailed the review request and ended
``Completed``. Here the report store is a SQLite file in a directory that does not
exist and cannot be made (a plain file holds its name), so the run waits in
``Saving``; it is cancelled there, then the file makes way. The run must save the
report, send no mail (the aiosmtpd server receives none), and end ``Cancelled`` with
a message naming the saved report.

A cancel that comes once the mail step has begun cannot hold the mail back (the
SMTP server may have it already). The run used to ask Temporal to cancel the
mail activity and fail at once with email ``failed``, while the mail went out
anyway. Now the mail step runs to its end, and the run ends ``Cancelled`` saying
what became of the mail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.worker import Replayer
from tests.integration.conftest import (
    SMTP_URL_ENV,
    HarnessFactory,
    SmtpServer,
    _Sink,
    serving_smtp,
)

from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_operator import workflows as operator_workflows
from steadfast_worker.workflows import ResearchWorkflow

pytestmark = [pytest.mark.integration, pytest.mark.hostile]


async def replays(handle: WorkflowHandle[Any, Any]) -> None:
    """The run's own history replays on this code (its cancel included)."""
    history = await handle.fetch_history()
    await Replayer(workflows=[ResearchWorkflow]).replay_workflow(history)


async def test_a_run_cancelled_while_saving_saves_and_mails_nobody(
    harness: HarnessFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "not-yet"
    missing.write_text("a file where the store's directory should be")
    overrides = {"storage": {"sqlitePath": str(missing / "reports.db"), "saveTimeout": "5m"}}
    async with harness(overrides) as h:
        handle = await h.start("cancelled while saving")

        async def waiting() -> RunStatus:
            while True:
                st: RunStatus = await handle.query(STATUS_QUERY, result_type=RunStatus)
                if st.phase == Phase.SAVING and st.message:
                    return st
                assert not Phase(st.phase).terminal, st
                await asyncio.sleep(0.2)

        seen = await asyncio.wait_for(waiting(), 60)
        assert seen.message.startswith("waiting for the report store: "), seen.message
        await handle.cancel()
        await asyncio.sleep(2)
        st = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert st.phase == Phase.SAVING, st  # the cancel does not stop the save
        missing.unlink()  # the next attempt makes the directory and saves

        try:
            await asyncio.wait_for(handle.result(), 90)
            ended = "completed"
        except WorkflowFailureError:
            ended = "cancelled"
        final = await handle.query(STATUS_QUERY, result_type=RunStatus)
        # Nobody was mailed.
        assert not h.smtp.messages_for(handle.id), (final, ended)
        assert final.phase == Phase.CANCELLED, final
        assert ended == "cancelled"
        assert final.report_id
        assert final.report_id in final.message, final.message
        assert final.email == "skipped", final
        # Saved, once, by this run.
        store = await h.store()
        try:
            saved = await store.get_report(final.report_id)
        finally:
            await store.close()
        assert saved is not None
        assert h.metric("steadfast_runs_total", phase="Cancelled") == 1
        assert h.metric("steadfast_runs_total", phase="Completed") == 0
        await replays(handle)


class _SlowSink(_Sink):
    """Takes its time over each message's data: a run's mail step lasts a while."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        await asyncio.sleep(4)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_smtp() -> Iterator[SmtpServer]:
    with serving_smtp(_SlowSink()) as server:
        yield server


async def test_a_cancel_during_the_mail_step_lets_it_finish_and_says_so(
    harness: HarnessFactory, slow_smtp: SmtpServer
) -> None:
    async with harness() as h:
        h.env[SMTP_URL_ENV] = slow_smtp.url
        handle = await h.start("cancelled while mailing")
        for _ in range(300):
            st: RunStatus = await handle.query(STATUS_QUERY, result_type=RunStatus)
            if st.phase == Phase.EMAILING:
                break
            assert not Phase(st.phase).terminal, st
            await asyncio.sleep(0.05)
        assert st.phase == Phase.EMAILING, st
        await asyncio.sleep(1)  # the mail is with the SMTP server
        await handle.cancel()
        try:
            await asyncio.wait_for(handle.result(), 60)
            ended = "completed"
        except WorkflowFailureError:
            ended = "ended without a result"
        final = await handle.query(STATUS_QUERY, result_type=RunStatus)
        # The mail went out, once, and the status says so.
        assert len(slow_smtp.messages_for(handle.id)) == 1, (final, ended)
        assert final.email == "sent", (final, ended)
        assert final.phase == Phase.CANCELLED, final
        assert final.report_id
        assert final.report_id in final.message, final.message
        assert ended == "ended without a result"
        await replays(handle)


async def test_a_deletion_waits_for_a_run_cancelled_while_it_mails(
    harness: HarnessFactory, slow_smtp: SmtpServer
) -> None:
    """The operator's deletion keeps the agent, and so its workers, while a run it
    cancelled has yet to end (``workflows.saving``). It used to wait only for runs in
    ``Saving``: a run cancelled in its mail step goes on mailing, and the workers went
    with the agent mid-send; the run then stayed open with nobody to finish it or say
    whether the mail went out."""
    async with harness() as h:
        h.env[SMTP_URL_ENV] = slow_smtp.url
        handle = await h.start("deleted while mailing")
        for _ in range(300):
            st: RunStatus = await handle.query(STATUS_QUERY, result_type=RunStatus)
            if st.phase == Phase.EMAILING:
                break
            await asyncio.sleep(0.05)
        assert st.phase == Phase.EMAILING, st
        run = await handle.describe()
        await handle.cancel()
        assert await operator_workflows.saving(h.client, [run]) == [handle.id]
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 60)
        assert await operator_workflows.saving(h.client, [run]) == []
        assert len(slow_smtp.messages_for(handle.id)) == 1

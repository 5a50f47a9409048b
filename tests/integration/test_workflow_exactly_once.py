"""Idempotent starts, one report row and at most one email per run, on SQLite and Postgres.

Re-runs of a finished workflow id (a report and a mail each) are in ``test_reruns.py``.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from tests.integration.conftest import HarnessFactory

from steadfast_contract.models import Phase

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def backend_dsn(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("postgres_dsn"))


async def test_same_topic_started_twice_is_one_run(
    harness: HarnessFactory, backend_dsn: str
) -> None:
    topic = f"idempotent {uuid.uuid4().hex[:6]}"
    async with harness(postgres_dsn=backend_dsn) as h:
        first, second = await asyncio.gather(h.start(topic), h.start(topic))
        assert first.id == second.id
        assert first.result_run_id == second.result_run_id
        result = await first.result()
        assert result.status.phase == Phase.COMPLETED

        store = await h.store()
        assert store.backend == ("postgres" if backend_dsn else "sqlite")
        assert await store.count_reports(first.id) == 1
        assert len(h.smtp.messages_for(first.id)) == 1
        # Each LLM call was served exactly once.
        served = {k: v for k, v in h.sim.served("llm").items() if k.startswith(first.id)}
        assert list(served.values()) == [1, 1]
        await store.close()


async def test_unconfirmed_claim_is_reported_unknown_never_resent(
    harness: HarnessFactory, backend_dsn: str
) -> None:
    """The documented edge case: a claim with no confirmation (a process that died
    between SMTP accepting the mail and recording it) is surfaced, not resent."""
    topic = f"unknown mail {uuid.uuid4().hex[:6]}"
    async with harness(postgres_dsn=backend_dsn, start_worker=False) as h:
        # The claim is per run: start the run first (no worker yet) to learn its id.
        handle = await h.start(topic)
        run_id = handle.result_run_id or ""
        store = await h.store()
        assert await store.claim_email(h.workflow_id(topic), run_id, "reviewer@example.test")
        async with h.worker():
            result = await handle.result()
        assert result.status.phase == Phase.COMPLETED
        assert result.status.email == "unknown"
        assert "never confirmed" in result.status.message
        assert not h.smtp.messages_for(h.workflow_id(topic))
        assert await store.email_status(h.workflow_id(topic), run_id) == "claimed"
        await store.close()


async def test_refused_mail_releases_the_claim(harness: HarnessFactory, backend_dsn: str) -> None:
    """A mail the server refused was certainly not delivered: a later attempt may send it."""
    topic = f"refused {uuid.uuid4().hex[:6]}"
    async with harness(postgres_dsn=backend_dsn) as h:
        h.env["STEADFAST_TEST_SMTP_URL"] = "smtp://127.0.0.1:1"  # nothing listens there
        with pytest.raises(Exception, match="Workflow execution failed"):
            await h.run(topic)
        store = await h.store()
        assert await store.email_status(h.workflow_id(topic), h.last_run_id) == "failed"
        assert await store.claim_email(h.workflow_id(topic), h.last_run_id, "reviewer@example.test")
        await store.close()

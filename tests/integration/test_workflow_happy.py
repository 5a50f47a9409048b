"""The happy path end to end: report row saved, mail delivered, cost and usage reported."""

from __future__ import annotations

import pytest
from tests.integration.conftest import HarnessFactory

from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus

pytestmark = pytest.mark.integration


async def test_happy_path_sqlite(harness: HarnessFactory) -> None:
    async with harness() as h:
        handle = await h.start("2026 AI agent market trends")
        result = await handle.result()
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)

        st = result.status
        assert st.phase == Phase.COMPLETED
        assert st.step == 5
        assert st.report_id
        assert st.email == "sent"
        assert st.llm_calls == 2
        assert st.retries == 0
        assert st.input_tokens > 0
        assert st.output_tokens > 0
        assert st.cost_usd > 0
        assert result.report_markdown_chars > 100
        assert status == st

        store = await h.store()
        assert await store.count_reports(handle.id) == 1
        assert await store.email_status(handle.id, handle.result_run_id or "") == "sent"
        mails = h.smtp.messages_for(handle.id)
        assert len(mails) == 1
        assert mails[0]["X-Steadfast-Report-Id"] == st.report_id

        model = h.config.model.name
        assert h.metric("steadfast_llm_cost_usd_total", model=model) == pytest.approx(st.cost_usd)
        assert h.metric("steadfast_llm_tokens_total", model=model, token_type="output") == (
            st.output_tokens
        )
        assert h.metric("steadfast_runs_total", phase="Completed") == 1
        assert h.metric("steadfast_run_cost_usd_count") == 1
        assert (
            h.metric(
                "steadfast_activity_attempts_total", activity="write_report", outcome="success"
            )
            == 1
        )
        assert h.metric("steadfast_llm_retry_cost_usd_total", model=model) == 0

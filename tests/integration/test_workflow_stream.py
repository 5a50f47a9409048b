"""The live report stream (what ``steadfast run --follow`` reads) and the
``anthropic-web-search`` provider, both against the real SDK and simulator."""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from tests.integration.conftest import HarnessFactory

from steadfast_contract.models import REPORT_TOPIC, STATUS_TOPIC, Phase, ReportChunk, RunStatus
from steadfast_contract.pricing import WEB_SEARCH_USD_PER_REQUEST

pytestmark = pytest.mark.integration


async def report_chunks(client: Client, workflow_id: str) -> list[ReportChunk]:
    """Every report piece the run publishes, as ``run --follow`` reads them, to its end."""
    stream = WorkflowStreamClient.create(client, workflow_id)
    return [item.data async for item in stream.subscribe([REPORT_TOPIC], result_type=ReportChunk)]


async def test_report_text_and_phases_stream_while_the_run_goes(harness: HarnessFactory) -> None:
    async with harness() as h:
        h.sim.set_faults({"llm": {"chunk_delay_ms": 5, "match": "research report"}})
        handle = await h.start("streamed report")
        stream = WorkflowStreamClient.create(h.client, handle.id)

        async def collect_report() -> list[ReportChunk]:
            chunks = []
            async for item in stream.subscribe([REPORT_TOPIC], result_type=ReportChunk):
                chunks.append(item.data)
            return chunks

        async def collect_phases() -> list[Phase]:
            phases = []
            async for item in stream.subscribe([STATUS_TOPIC], result_type=RunStatus):
                phases.append(item.data.phase)
            return phases

        chunks, phases = await asyncio.wait_for(
            asyncio.gather(collect_report(), collect_phases()), 60
        )
        result = await handle.result()

        print(f"{len(chunks)} pieces")
        assert len(chunks) > 1  # arrived in pieces, not as one block at the end
        assert all(c.attempt == 1 for c in chunks)
        offsets = [c.offset for c in chunks]
        assert offsets == sorted(offsets)
        assert offsets[0] == 0
        text = "".join(c.text for c in chunks)
        assert len(text) == result.report_markdown_chars
        assert phases == [
            Phase.GENERATING_QUERIES,
            Phase.SEARCHING,
            Phase.WRITING,
            Phase.SAVING,
            Phase.EMAILING,
            Phase.COMPLETED,
        ]


async def test_a_reply_that_comes_at_once_is_published_without_a_signal(
    harness: HarnessFactory,
) -> None:
    """The text after the activity's last published piece (here all of it: the reply
    comes at once) travels in its result, and the workflow publishes it: a follower
    reads the whole report, and the run's history holds no stream signal, nor the
    report twice."""
    async with harness() as h:
        handle = await h.start("report at once")
        chunks = await asyncio.wait_for(report_chunks(h.client, handle.id), 60)
        result = await handle.result()
        assert [(c.attempt, c.offset) for c in chunks] == [(1, 0)]
        assert len(chunks[0].text) == result.report_markdown_chars
        history = await handle.fetch_history()
        signals = [
            e.workflow_execution_signaled_event_attributes.signal_name
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        ]
        assert signals == []
        results = [
            json.loads(e.activity_task_completed_event_attributes.result.payloads[0].data)
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        ]
        (report,) = [r for r in results if isinstance(r, dict) and "markdown" in r]
        # The text is in the result once: the tail says where it starts, not what it is.
        assert report["markdown"] == chunks[0].text
        assert (report["tail"]["offset"], report["tail"]["text"]) == (0, "")


async def test_anthropic_web_search_provider(harness: HarnessFactory) -> None:
    async with harness({"search": {"provider": "anthropic-web-search"}}) as h:
        result = await h.run("searched by the model")
        st = result.status
        assert st.phase == Phase.COMPLETED
        assert st.llm_calls == 2 + 3  # queries, three searches, report
        assert not h.sim.attempts("search")  # the http provider was not used
        assert st.cost_usd > 3 * WEB_SEARCH_USD_PER_REQUEST
        assert (
            h.metric("steadfast_activity_attempts_total", activity="web_search", outcome="success")
            == 3
        )


async def test_a_deep_run_streams_each_turn_and_the_report_across_continue_as_new(
    harness: HarnessFactory,
) -> None:
    """``run --follow`` on a deep run that continues as new every two turns: every
    turn's text arrives, in turn order, and the last turn's is the whole report."""
    overrides = {
        "research": {"strategy": "deep", "maxTurns": 5, "continueAsNewAfterTurns": 2},
        "model": {"maxTokens": 4000},
    }
    async with harness(overrides) as h:
        h.sim.set_faults(
            {"llm": {"agent_turns": 5, "chunk_delay_ms": 2}, "search": {"page_links": True}}
        )
        handle = await h.start("streamed deep report")
        chunks = await asyncio.wait_for(report_chunks(h.client, handle.id), 90)
        result = await handle.result()
        assert result.status.phase == Phase.COMPLETED
        turns = [c.turn for c in chunks]
        assert turns == sorted(turns)
        assert set(turns) == {1, 2, 3, 4, 5}
        report = "".join(c.text for c in chunks if c.turn == 5)
        assert len(report) == result.report_markdown_chars

"""A search endpoint that answers 50 MB: the search fails, the worker and the history do not.

A search answer is untrusted input that would travel into workflow history (whose
payloads Temporal caps at a few megabytes) and into the report prompt. Before the
answer was bounded, a 50 MB result list was parsed whole and its snippet sent back
as the activity's result; the SDK refused it (``PayloadsTooLarge``) and the search
was retried, downloading 50 MB per attempt, until its attempts ran out.
"""

from __future__ import annotations

import json

import pytest
from tests.integration.conftest import HarnessFactory
from tests.support.temporal import failure_of

from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_dev.sim import content

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

FIFTY_MB = 50 * 1024 * 1024


async def test_one_oversized_answer_fails_that_search_and_the_run_goes_on(
    harness: HarnessFactory,
) -> None:
    topic = "oversized search answers"
    async with harness() as h:
        # Only one of the run's queries gets the 50 MB answer: the longest, which
        # no other query contains.
        target = max(content.search_queries(topic, 3), key=len)
        h.sim.set_faults({"search": {"answer_bytes": FIFTY_MB, "match": target}})
        handle = await h.start(topic)
        result = await handle.result()

        assert result.status.phase == Phase.COMPLETED
        assert result.status.message.startswith("1 of 3 searches failed")
        attempts = h.sim.attempts("search")
        assert len(attempts) == 3
        # Not retried: the same query would bring the same answer.
        oversized = [e for e in h.sim.entries("search") if target in e["summary"]]
        assert len(oversized) == 1
        assert (
            h.metric("steadfast_activity_attempts_total", activity="web_search", outcome="failure")
            == 1
        )
        # The report was written from the other two searches and saved.
        store = await h.store()
        try:
            reports = await store.list_reports(h.workflow_id(topic))
        finally:
            await store.close()
        assert [r.run_id for r in reports] == [h.last_run_id]
        assert reports[0].markdown.startswith("# ")
        # Nothing near the answer's size reached the history.
        history = await handle.fetch_history()
        assert len(json.dumps(history.to_json_dict())) < 512 * 1024


async def test_every_answer_oversized_fails_the_run_before_paying_for_a_report(
    harness: HarnessFactory,
) -> None:
    topic = "only oversized answers"
    async with harness() as h:
        h.sim.set_faults({"search": {"answer_bytes": FIFTY_MB, "match": topic}})
        handle = await h.start(topic)
        cause = await failure_of(handle)

        assert cause.type == "ResponseTooLarge"
        assert "more than 2097152 bytes" in str(cause)
        # One call for the queries, none for a report that had nothing to stand on.
        assert len(h.sim.attempts("llm")) == 1
        assert len(h.sim.attempts("search")) == 3
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.phase == Phase.FAILED


#: A client cuts each field (title 300, address 2,048, snippet 1,000 characters), and
#: each character here is 6 bytes in a payload: 20 KB a result, 1 MB for 50 of them,
#: against a body of 0.9 MB in UTF-8.
WIDE = "\u8a9e" * 2048


async def test_results_too_wide_for_a_payload_are_cut_and_the_report_is_written(
    harness: HarnessFactory,
) -> None:
    topic = "results too wide to carry"
    async with harness({"search": {"maxResults": 50}, "budget": {"maxUSDPerRun": 20.0}}) as h:
        h.sim.set_faults({"search": {"answer": WIDE, "match": ""}})
        handle = await h.start(topic)
        result = await handle.result()

        assert result.status.phase == Phase.COMPLETED, result.status.message
        # Each query searched once, and the report asked for once.
        assert len(h.sim.attempts("search")) == 3
        assert len(h.sim.attempts("llm")) == 2
        store = await h.store()
        try:
            reports = await store.list_reports(h.workflow_id(topic))
        finally:
            await store.close()
        assert [r.run_id for r in reports] == [h.last_run_id]
        # Every payload the run recorded fits, with room to spare; each query kept the
        # 13 results of 20 KB that fit in 256 KB (tests/unit/test_search_answer_bounds.py).
        history = await handle.fetch_history()
        for event in history.events:
            assert event.ByteSize() < 1024 * 1024
        [step] = [
            e.activity_task_completed_event_attributes.result.payloads[0].data
            for e in history.events
            if e.HasField("activity_task_completed_event_attributes")
            and b'"searches"' in e.activity_task_completed_event_attributes.result.payloads[0].data
        ]
        assert [len(s["results"]) for s in json.loads(step)["searches"]] == [13, 13, 13]

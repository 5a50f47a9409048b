"""A pipeline run's searches are one activity, and still retried and resumed per query.

Runs of shape 2 search their queries in one ``web_searches`` activity (three
history events where three activities took nine or more). What an activity per
query gave must hold: a query that answered is not searched again, whether its
step is retried for another query's fault or resumed after its worker was killed,
and each query's attempts are counted as before (``status.retries``, the
``web_search`` attempt and retry metrics). Every count here comes from the
simulator's request log or the run's history, not from the workflow's accounting.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import ActivityEnvironment
from tests.integration.conftest import Harness, HarnessFactory, base_config
from tests.support.temporal import scheduled_activities

from steadfast_contract import activities as act
from steadfast_contract.models import SEARCH_STEP_PATCH, Phase, ResearchResult
from steadfast_dev.sim import content

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _step_attempts(history: WorkflowHistory) -> list[int]:
    """The attempt the search step's activity ended on (history records the last
    attempt's start only), one per scheduling of it."""
    scheduled = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == act.WEB_SEARCHES
    }
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]


async def _run_step(h: Harness, queries: list[str]) -> tuple[object, list[dict[str, Any]]]:
    """The search step run once in the SDK's activity environment (which records every
    heartbeat the activity asks for); its outcome and those heartbeats' details."""
    sent: list[dict[str, Any]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: sent.append(details[0])
    try:
        outcome: object = await env.run(h.activities.web_searches, act.WebSearchesInput(queries, 3))
    except Exception as err:  # a retryable fault ends the attempt: its state went with it
        outcome = err
    return outcome, sent


def _searches(h: Harness, topic: str) -> dict[str, int]:
    """Attempts per query of this topic's run, from the simulator's log."""
    queries = content.search_queries(topic, 3)
    attempts: dict[str, int] = {q: 0 for q in queries}
    for entry in h.sim.entries("search"):
        if entry["summary"] in attempts:
            attempts[entry["summary"]] += 1
    return attempts


async def test_a_run_searches_every_query_in_one_activity(harness: HarnessFactory) -> None:
    topic = "one search step"
    async with harness() as h:
        handle = await h.start(topic)
        result: ResearchResult = await handle.result()
        assert result.status.phase == Phase.COMPLETED
        assert result.status.retries == 0
        history = await handle.fetch_history()
        scheduled = scheduled_activities(history)
        assert scheduled.count(act.WEB_SEARCHES) == 1
        assert act.WEB_SEARCH not in scheduled
        assert SEARCH_STEP_PATCH.encode() in history.to_json().encode()
        assert set(_searches(h, topic).values()) == {1}
        assert (
            h.metric("steadfast_activity_attempts_total", activity="web_search", outcome="success")
            == 3
        )


async def test_a_failing_query_is_retried_alone(harness: HarnessFactory) -> None:
    topic = "one flaky query"
    async with harness() as h:
        target = max(content.search_queries(topic, 3), key=len)
        h.sim.set_faults({"search": {"first_n": 1, "kind": "500", "match": target}})
        handle = await h.start(topic)
        result: ResearchResult = await handle.result()

        assert result.status.phase == Phase.COMPLETED
        attempts = _searches(h, topic)
        assert attempts.pop(target) == 2
        assert set(attempts.values()) == {1}  # the others answered once, not again
        assert _step_attempts(await handle.fetch_history()) == [2]
        assert result.status.retries == 1
        assert result.status.message == "report saved"
        assert (
            h.metric(
                "steadfast_activity_retries_total", activity="web_search", error_type="ServerError"
            )
            == 1
        )


async def test_a_step_resumed_after_its_worker_was_killed_searches_only_the_open_query(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path
) -> None:
    topic = "killed mid search"
    async with harness(start_worker=False) as h:
        target = max(content.search_queries(topic, 3), key=len)
        # The target's first search hangs; the others answer at once.
        h.sim.set_faults({"search": {"first_n": 1, "kind": "hang", "match": target}})
        doc: dict[str, Any] = base_config(h.sim, h.task_queue, Path(h.config.storage.sqlite_path))
        doc["model"]["timeout"] = "60s"  # the client must not give up on the hang first
        proc = await h.spawn_worker(doc, temporal_address, tmp_path / "w.json")
        try:
            handle = await h.start(topic)
            for _ in range(600):
                served = [e for e in h.sim.entries("search") if e["outcome"] == "served"]
                if len(served) == 2:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the two other queries never answered")
            # The SDK sends a heartbeat at most every 0.8 heartbeat timeouts (2.4 s).
            await asyncio.sleep(3.5)
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
            async with h.worker():
                result: ResearchResult = await handle.result()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        assert result.status.phase == Phase.COMPLETED
        attempts = _searches(h, topic)
        assert attempts.pop(target) == 2
        assert set(attempts.values()) == {1}
        assert _step_attempts(await handle.fetch_history()) == [2]
        assert result.status.retries == 1
        # The lost attempt is counted by the one that replaced it, for the open query.
        assert (
            h.metric(
                "steadfast_activity_attempts_total",
                activity="web_search",
                outcome="failure",
            )
            == 1
        )


async def test_searches_that_answer_together_need_no_heartbeat(harness: HarnessFactory) -> None:
    # The SDK sends an attempt's first heartbeat at once: one RPC per pipeline run
    # (bench/temporal_cost.py) that told the server nothing a success does not.
    async with harness(start_worker=False) as h:
        queries = content.search_queries("answers together", 3)
        outcome, sent = await _run_step(h, queries)

        assert isinstance(outcome, act.WebSearchesOutput)
        assert [s.query for s in outcome.searches] == queries
        assert sent == []


async def test_answers_wait_in_a_heartbeat_while_a_query_is_still_open(
    harness: HarnessFactory,
) -> None:
    async with harness(start_worker=False) as h:
        queries = content.search_queries("one slow query", 3)
        target = max(queries, key=len)
        # The target stalls a second, then fails retryably (504); the others answer at once.
        h.sim.set_faults(
            {"search": {"first_n": 1, "kind": "timeout", "timeout_s": 1.0, "match": target}}
        )
        outcome, sent = await _run_step(h, queries)

        assert isinstance(outcome, Exception)  # the attempt ends on the target's fault
        # Before that, a heartbeat carried the two answers, so a worker lost while the
        # target stalled would not search them again.
        answered = {str(i) for i, q in enumerate(queries) if q != target}
        assert len(sent) == 2
        assert set(sent[0]["finished"]) == answered
        assert set(sent[1]["finished"]) == answered  # the failure's, with the same news

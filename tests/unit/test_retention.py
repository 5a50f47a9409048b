"""Which transcripts the retention sweep deletes (steadfast_worker.retention.verdict), and
how often it looks (``cadence``, from ``storage.transcriptRetention``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowExecutionStatus as Status

from steadfast_contract.spec import StorageSpec
from steadfast_worker import retention
from steadfast_worker.retention import Found, Listed, chain_ends, split_conversation, verdict

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def found(
    first: str = "r1", *, running: bool = False, closed_ago: timedelta | None = None
) -> Found:
    closed = None if closed_ago is None else NOW - closed_ago
    return Found(first, running, NOW - 3 * DAY, closed)


def test_a_run_still_open_keeps_its_transcript_however_idle() -> None:
    assert not verdict("r1", found(running=True), NOW, DAY)


def test_a_closed_run_keeps_it_for_the_keep_period_then_lets_it_go() -> None:
    assert not verdict("r1", found(closed_ago=timedelta(hours=23)), NOW, DAY)
    assert verdict("r1", found(closed_ago=DAY), NOW, DAY)
    assert verdict("r1", found(closed_ago=timedelta(0)), NOW, timedelta(0))


def test_an_id_temporal_does_not_know_is_not_judged() -> None:
    # Another agent's, in another namespace sharing the database, or one retention removed.
    assert not verdict("r1", None, NOW, timedelta(0))


def test_a_later_chain_under_the_same_id_closes_the_earlier_one() -> None:
    rerun = Found("r2", True, NOW - timedelta(hours=2), None)
    earlier = found("r1", closed_ago=3 * DAY)
    assert not verdict("r1", rerun, NOW, DAY, chain=earlier)  # began two hours ago: a day
    assert verdict("r1", rerun, NOW, timedelta(hours=1), chain=earlier)
    # The re-run's own transcript follows its own state.
    assert not verdict("r2", rerun, NOW, timedelta(0))
    # A closed re-run: the earlier chain closed before it began.
    closed = Found("r2", False, NOW - 3 * DAY, NOW - 2 * DAY)
    assert verdict("r1", closed, NOW, DAY, chain=earlier)


def test_a_chain_temporal_does_not_know_here_is_another_namespaces() -> None:
    """Ids name the agent and the topic, not the namespace: another namespace's run of
    the same topic shares the id, and a newer chain of this namespace's says nothing
    of it (the old sweep deleted its transcript while it ran)."""
    rerun = Found("r2", False, NOW - 3 * DAY, NOW - 2 * DAY)
    assert not verdict("r1", rerun, NOW, timedelta(0), chain=None)


def test_only_the_workers_own_agents_chains_are_judged() -> None:
    """Agents sharing one database each sweep at their own retention: a chain on another
    task queue is another agent's."""
    theirs = Found("r1", False, NOW - 3 * DAY, NOW - 2 * DAY, "steadfast.ns.other")
    assert not verdict("r1", theirs, NOW, timedelta(0), task_queue="steadfast.ns.mine")
    assert verdict("r1", theirs, NOW, timedelta(0), task_queue="steadfast.ns.other")
    rerun = Found("r2", False, NOW - DAY, NOW - DAY, "steadfast.ns.mine")
    assert not verdict("r1", rerun, NOW, timedelta(0), chain=theirs, task_queue="steadfast.ns.mine")


def test_a_chain_whose_first_run_is_gone_is_judged_by_the_run_that_ended_it() -> None:
    """History retention removes a continued chain's first run first: the run that ended
    the chain names the same first run, and its queue says whose it is."""
    ended = Found("r1", False, NOW - 3 * DAY, NOW - 2 * DAY, "steadfast.ns.mine", "r1c")
    rerun = Found("r2", True, NOW - DAY, None, "steadfast.ns.mine", "r2")
    assert verdict("r1", rerun, NOW, DAY, chain=ended, task_queue="steadfast.ns.mine")
    assert not verdict("r1", rerun, NOW, 2 * DAY, chain=ended, task_queue="steadfast.ns.mine")
    assert not verdict("r1", rerun, NOW, DAY, chain=ended, task_queue="steadfast.ns.other")
    # Found by neither its first run nor its end: not this namespace's, or removed whole.
    assert not verdict("r1", rerun, NOW, timedelta(0), chain=None)
    # The newest run names its chain's first run whatever became of that run.
    last = Found("r1", False, NOW - 3 * DAY, NOW - 2 * DAY, "steadfast.ns.mine", "r1c")
    assert verdict("r1", last, NOW, DAY, task_queue="steadfast.ns.mine")
    assert not verdict("r1", replace(last, running=True, closed=None), NOW, timedelta(0))


def _listed(run_id: str, status: Status | None, days_ago: float) -> Listed:
    return Listed(run_id, status, NOW - timedelta(days=days_ago))


def test_the_runs_that_ended_a_chain_are_described_oldest_first() -> None:
    """Chains under one id follow each other and retention removes runs in the order they
    closed: once a chain's first run is gone, the oldest chain end left is its own."""
    listed = [
        _listed("r3", Status.RUNNING, 0.5),  # the newest chain, already described
        _listed("r2c", Status.COMPLETED, 1),
        _listed("r2b", Status.CONTINUED_AS_NEW, 1.5),  # not an end: names its chain too
        _listed("r2", Status.CONTINUED_AS_NEW, 2),
        _listed("r1c", Status.TERMINATED, 3),
        _listed("r1b", Status.CONTINUED_AS_NEW, 4),
        _listed("r0", Status.FAILED, 9),  # an earlier chain whose removal lags
        _listed("rx", None, 1),  # a status visibility does not say: not an end
    ]
    assert chain_ends(listed, "r3") == ["r0", "r1c", "r2c"]
    assert chain_ends(listed, "r3", looks=2) == ["r0", "r1c"]
    assert chain_ends(listed, "r2c") == ["r0", "r1c"]  # the newest is never described again
    assert chain_ends([], "r3") == []


def test_an_open_run_of_a_server_that_names_no_first_run_is_kept() -> None:
    assert not verdict("r1", Found("", True, NOW - 30 * DAY, None), NOW, timedelta(0))


def test_a_conversation_key_splits_at_its_last_slash() -> None:
    assert split_conversation("research-ns-a-topic-1f/0192-ab") == (
        "research-ns-a-topic-1f",
        "0192-ab",
    )
    assert split_conversation("no-run-id") == ("", "no-run-id")


@pytest.mark.parametrize(
    ("keep", "every", "idle"),
    [
        (timedelta(seconds=1), timedelta(seconds=10), timedelta(seconds=1)),  # not more often
        (timedelta(minutes=5), timedelta(minutes=5), timedelta(minutes=5)),
        (timedelta(days=1), timedelta(hours=1), timedelta(hours=1)),  # the default
        (timedelta(days=90), timedelta(hours=1), timedelta(hours=1)),  # not less often
    ],
)
def test_the_sweep_looks_as_often_as_the_retention_asks_within_bounds(
    keep: timedelta, every: timedelta, idle: timedelta
) -> None:
    assert retention.cadence(keep) == (every, idle)


@pytest.mark.parametrize("given", ["0s", "500ms", "2161h"])
def test_a_retention_outside_one_second_to_ninety_days_is_refused(given: str) -> None:
    with pytest.raises(ValidationError, match=r"transcriptRetention|transcript_retention"):
        StorageSpec.model_validate({"transcriptRetention": given})
    assert StorageSpec.model_validate({"transcriptRetention": "1s"}).transcript_retention == (
        timedelta(seconds=1)
    )

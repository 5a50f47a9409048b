"""The heartbeat state a retry starts from survives Temporal's round trip whole.

Heartbeat details are the only memory an attempt has of one lost with its worker;
a field that did not come back would have the retry count a lost request twice
(``counted``) or not at all (``inflight_*``).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from temporalio.testing import ActivityEnvironment

from steadfast_worker.activities.heartbeat import Carried

pytestmark = pytest.mark.unit


def _read_back(details: object) -> Carried:
    """``Carried`` as an attempt reads it from ``details``, sent through JSON as Temporal's
    default converter sends them."""
    env = ActivityEnvironment()
    env.info = replace(env.info, attempt=2, heartbeat_details=[json.loads(json.dumps(details))])
    return env.run(Carried.from_info)


def test_every_field_comes_back() -> None:
    state = Carried(0.5, 2, 10, 1, 0.25, 100, 20, "wf/r/a/2/0", "ledger", {"0": ["x"]})
    state.count_failed("wf/r/a/2/1", 0.125)
    assert state.failed_cost_usd == 0.625
    assert _read_back(state.as_details()) == state


def test_empty_lists_stay_out_of_the_details() -> None:
    details = Carried().as_details()
    assert "counted" not in details
    assert "finished" not in details
    assert _read_back(details) == Carried()
    assert _read_back({"failed_cost_usd": 0.5}) == Carried(failed_cost_usd=0.5)


def test_counted_keeps_what_it_counted_for_each_request() -> None:
    state = Carried()
    state.count_failed("wf/r/a/1/0", 0.002)
    assert _read_back(state.as_details()).counted == {"wf/r/a/1/0": 0.002}


def test_a_list_of_counted_keys_from_an_older_worker_reads_as_counted_at_nothing() -> None:
    """An older worker heartbeated the keys alone; a reply of theirs taken from the
    store is then counted in full again (over, never under)."""
    read = _read_back({"failed_cost_usd": 0.5, "counted": ["wf/r/a/1/0"]})
    assert read.counted == {"wf/r/a/1/0": 0.0}
    assert read.failed_cost_usd == 0.5


def test_an_attempt_ending_with_a_paid_request_unsettled_counts_it_once() -> None:
    state = Carried(inflight_request="r/1/0", inflight_cost_usd=0.05)
    state.count_unsettled()
    assert state.failed_cost_usd == pytest.approx(0.05)
    assert state.counted == {"r/1/0": pytest.approx(0.05)}
    assert state.inflight_cost_usd == 0.0
    state.count_unsettled()  # nothing left in flight: nothing counted again
    assert state.failed_cost_usd == pytest.approx(0.05)


@pytest.mark.parametrize(
    "state",
    [
        Carried(inflight_request="", inflight_cost_usd=0.05),  # settled: the ledger knows
        Carried(inflight_request="r/1/0", inflight_cost_usd=0.0),  # nothing billed yet
        Carried(inflight_request="r/1/0", inflight_cost_usd=0.05, counted={"r/1/0": 0.05}),
    ],
)
def test_a_request_settled_unbilled_or_counted_already_is_not_counted_at_the_end(
    state: Carried,
) -> None:
    before = state.failed_cost_usd
    state.count_unsettled()
    assert state.failed_cost_usd == before

"""Which agent keeps a task queue two agents name (:mod:`steadfast_operator.queueclaims`)."""

from __future__ import annotations

import pytest

from steadfast_operator.queueclaims import Claim, claimed_queue, queue_key, refusal

pytestmark = pytest.mark.unit

FIRST = Claim("2026-12-01T10:00:00Z", "team-a", "watch")
LATER = Claim("2026-12-02T09:00:00Z", "team-b", "scout")


def test_the_agent_created_first_keeps_the_queue_and_a_later_one_is_refused() -> None:
    claims = [LATER, FIRST]
    assert refusal(FIRST, claims, "shared") is None
    why = refusal(LATER, claims, "shared")
    assert why is not None
    assert why.startswith("spec.temporal.taskQueue: shared is already the task queue")
    assert "agent watch in namespace team-a, created first" in why


def test_an_agent_alone_on_its_queue_passes() -> None:
    assert refusal(LATER, [LATER], "q") is None
    assert refusal(LATER, [], "q") is None


def test_agents_created_in_the_same_second_are_ordered_by_namespace_and_name() -> None:
    a = Claim("2026-12-01T10:00:00Z", "ns", "a")
    b = Claim("2026-12-01T10:00:00Z", "ns", "b")
    assert refusal(a, [a, b], "q") is None
    assert refusal(b, [a, b], "q") is not None


def test_the_queue_is_read_from_the_status_then_the_spec_then_the_default() -> None:
    pinned = {"taskQueue": {"name": "steadfast-team-a-watch"}}
    named = {"temporal": {"taskQueue": "custom", "namespace": "prod", "address": "t:7233"}}
    assert claimed_queue("team-a", "watch", named, pinned, "d:7233") == (
        "t:7233",
        "prod",
        "steadfast-team-a-watch",
    )
    assert claimed_queue("team-a", "watch", named, {}, "d:7233") == ("t:7233", "prod", "custom")
    assert claimed_queue("team-a", "watch", {}, {}, "d:7233") == (
        "d:7233",
        "default",
        "steadfast.team-a.watch",
    )


def test_one_queue_name_on_two_temporals_or_namespaces_is_two_queues() -> None:
    q = "custom"
    keys = {
        queue_key("t1:7233", "default", q),
        queue_key("t2:7233", "default", q),
        queue_key("t1:7233", "other", q),
    }
    assert len(keys) == 3
    assert queue_key("t1:7233", "", q) == queue_key("t1:7233", "default", q)

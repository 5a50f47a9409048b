"""The decision whether a worker serves a task (:mod:`steadfast_worker.ownership`)."""

from __future__ import annotations

import pytest

from steadfast_worker.ownership import owner, refusal

pytestmark = pytest.mark.unit


def test_a_worker_serves_its_own_agents_tasks_and_those_that_name_nobody() -> None:
    own = owner("team-a", "watch")
    assert refusal(own, own, "q") is None
    assert refusal(own, None, "q") is None  # scheduled by a release before the header


def test_another_agents_task_is_refused_naming_both_agents_and_the_queue() -> None:
    why = refusal(owner("team-a", "watch"), owner("team-b", "watch"), "shared")
    assert why is not None
    assert "'shared' is shared by two agents" in why
    assert "team-a/watch" in why
    assert "team-b/watch" in why
    assert "spec.temporal.taskQueue" in why


@pytest.mark.parametrize(
    ("a", "b"),
    [(("a-b", "c"), ("a", "b-c")), (("news", "eu"), ("news", "eu-west")), (("x", "y"), ("y", "x"))],
)
def test_agents_whose_names_run_together_elsewhere_are_told_apart(
    a: tuple[str, str], b: tuple[str, str]
) -> None:
    # The legacy queue and the workflow id prefix join these with '-'; the header does not.
    assert owner(*a) != owner(*b)
    assert refusal(owner(*a), owner(*b), "q") is not None

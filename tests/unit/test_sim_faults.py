"""The simulators' fault plan: exact sequences, seeded rates, and the JSON form."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from steadfast_dev.sim.faults import (
    FAULT_KINDS,
    ServicePlan,
    choose_fault,
    draw,
    plan_to_json,
    update_plan,
)

pytestmark = pytest.mark.unit


def test_first_n_fails_exactly_the_first_attempts() -> None:
    plan = update_plan(ServicePlan(), {"first_n": 2, "kind": "429", "retry_after": 3}, "llm")
    picks = [choose_fault(plan, seed=0, key="k", attempt=n, text="") for n in (1, 2, 3, 4)]
    assert picks == ["429", "429", None, None]
    assert plan.retry_after == 3.0


def test_sequence_gives_each_attempt_its_own_fault() -> None:
    plan = update_plan(ServicePlan(), {"sequence": ["529", "timeout", "bad_json"]}, "llm")
    picks = [choose_fault(plan, seed=0, key="k", attempt=n, text="") for n in (1, 2, 3, 4)]
    assert picks == ["529", "timeout", "bad_json", None]


def test_match_limits_faults_to_requests_containing_the_text() -> None:
    plan = update_plan(ServicePlan(), {"first_n": 1, "kind": "500", "match": "JSON array"}, "llm")
    assert choose_fault(plan, seed=0, key="a", attempt=1, text="Return a json ARRAY") == "500"
    assert choose_fault(plan, seed=0, key="b", attempt=1, text="Write the report") is None


def test_rates_are_reproducible_and_close_to_the_asked_proportions() -> None:
    plan = update_plan(ServicePlan(), {"rates": {"429": 0.2, "500": 0.1}}, "llm")
    picks = [choose_fault(plan, seed=7, key=f"k{i}", attempt=1, text="") for i in range(4000)]
    again = [choose_fault(plan, seed=7, key=f"k{i}", attempt=1, text="") for i in range(4000)]
    other_seed = [choose_fault(plan, seed=8, key=f"k{i}", attempt=1, text="") for i in range(4000)]
    assert picks == again
    assert picks != other_seed
    counts = Counter(picks)
    assert 0.17 < counts["429"] / 4000 < 0.23
    assert 0.08 < counts["500"] / 4000 < 0.12
    assert set(counts) == {"429", "500", None}


def test_draw_is_uniform_in_the_unit_interval() -> None:
    values = [draw(1, "key", n) for n in range(1000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert 0.45 < sum(values) / len(values) < 0.55


def test_rate_one_always_faults_after_the_sequence() -> None:
    plan = update_plan(ServicePlan(), {"rates": {"hang": 1.0}, "first_n": 1, "kind": "400"}, "x")
    assert choose_fault(plan, seed=0, key="k", attempt=1, text="") == "400"
    assert choose_fault(plan, seed=0, key="k", attempt=2, text="") == "hang"


def test_update_keeps_unspecified_fields_and_clear_starts_over() -> None:
    base = ServicePlan(latency_ms=50, api_key="secret", rates={"500": 0.5})
    merged = update_plan(base, {"first_n": 1, "kind": "401"}, "llm")
    assert merged.latency_ms == 50
    assert merged.rates == {"500": 0.5}
    cleared = update_plan(base, {"clear": True}, "llm")
    assert cleared == ServicePlan(api_key="secret")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rates": {"418": 0.1}}, "llm.rates: unknown fault kind"),
        ({"rates": {"429": 0.7, "500": 0.6}}, "sum to at most 1"),
        ({"rates": {"429": -0.1}}, "llm.rates.429: must be >= 0"),
        ({"first_n": "two"}, "llm.first_n: expected a number"),
        ({"kind": "429"}, "llm.kind: only meaningful together with first_n"),
        ({"latency": 5}, "unknown field(s) ['latency']"),
        ({"sequence": "429"}, "llm.sequence: expected a list"),
        ({"match": 3}, "llm.match: expected a string"),
        ({"stream_cut": 1.5}, "llm.stream_cut: must be a fraction within [0, 1]"),
        ({"token_density": 0}, "llm.token_density: must be within [0.1, 10]"),
        ({"token_density": "dense"}, "llm.token_density: expected a number"),
    ],
)
def test_bad_plans_are_rejected_naming_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        update_plan(ServicePlan(), data, "llm")


def test_stream_cut_moves_where_a_stream_fault_strikes() -> None:
    plan = update_plan(ServicePlan(), {"stream_cut": 0.9}, "llm")
    assert plan.stream_cut == 0.9
    assert plan_to_json(plan)["stream_cut"] == 0.9
    assert ServicePlan().stream_cut == 0.5  # halfway, as before the setting existed


def test_token_density_is_a_setting_that_clear_keeps() -> None:
    plan = update_plan(ServicePlan(), {"token_density": 1.6, "first_n": 1}, "llm")
    assert plan.token_density == 1.6
    assert plan_to_json(plan)["token_density"] == 1.6
    assert update_plan(plan, {"clear": True}, "llm") == ServicePlan(token_density=1.6)
    assert ServicePlan().token_density == 1.0  # input counted by the rule, as before


def test_json_form_masks_the_api_key_and_lists_every_setting() -> None:
    shown = plan_to_json(ServicePlan(api_key="secret", sequence=("429",)))
    assert shown["api_key"] == "***"
    assert shown["sequence"] == ["429"]
    assert "secret" not in repr(shown)


def test_every_fault_kind_is_accepted_in_the_json_form() -> None:
    for kind in FAULT_KINDS:
        plan = update_plan(ServicePlan(), {"first_n": 1, "kind": kind}, "llm")
        assert choose_fault(plan, seed=0, key="k", attempt=1, text="") == kind


def test_service_scope_counts_matching_requests_whatever_their_keys() -> None:
    plan = update_plan(ServicePlan(), {"first_n": 1, "kind": "bad_json", "scope": "service"}, "llm")
    assert plan.scope == "service"
    assert choose_fault(plan, seed=0, key="ask1", attempt=1, text="", ordinal=1) == "bad_json"
    assert choose_fault(plan, seed=0, key="ask2", attempt=1, text="", ordinal=2) is None
    with pytest.raises(ValueError, match=r"llm\.scope"):
        update_plan(ServicePlan(), {"scope": "global"}, "llm")


def test_sim_verb_documents_every_fault_kind_in_order() -> None:
    """``steadfast sim`` builds its fault flags without importing the sandbox."""
    from steadfast_cli.commands import sim as sim_verb

    assert tuple(sim_verb._FAULT_HELP) == FAULT_KINDS

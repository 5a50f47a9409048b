"""Spec validation: schema-level errors and the cross-field checks only the operator makes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from steadfast_contract import crdgen
from steadfast_contract.durations import DURATION_PATTERN
from steadfast_operator import render
from steadfast_operator.spec import InvalidSpec, check_semantics, parse_spec, validate

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
AGENT = render.AgentRef(name="agent", namespace="ns", uid="uid-1")


def good() -> dict[str, Any]:
    return {
        "topics": ["a"],
        "search": {"endpoint": "http://search/"},
        "storage": {"postgresSecretRef": {"name": "reports-db", "key": "dsn"}},
    }


def check(raw: dict[str, Any], price: float | None = 15.0, image: str = "img") -> None:
    spec = parse_spec("ns", "agent", raw)
    check_semantics(
        "ns",
        "agent",
        spec,
        default_image=image,
        default_temporal_address="t:7233",
        output_price_per_mtok=price,
    )


def test_good_spec_passes() -> None:
    check(good())


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"topics": []}, "spec.topics"),
        ({"workers": {"minReplicas": 5, "maxReplicas": 2}}, "spec.workers"),
        ({"workers": {"autoscaler": "hpa"}}, "spec.workers.autoscaler"),
        ({"budget": {"maxUSDPerRun": 0}}, "spec.budget.maxUSDPerRun"),
        ({"deletionPolicy": "Orphan"}, "spec.deletionPolicy"),
        ({"model": {"maxTokens": 0}}, "spec.model.maxTokens"),
        # A request or limit below zero: the API server would refuse the Deployment.
        ({"workers": {"resources": {"requests": {"cpu": "-1"}}}}, "spec.workers.resources"),
        ({"workers": {"resources": {"limits": {"memory": -5}}}}, "spec.workers.resources"),
        ({"workers": {"resources": {"limits": {"memory": "lots"}}}}, "spec.workers.resources"),
        # Longer than any duration there is (the CRD's pattern lets it through where no
        # CEL rule reads it): refused, not an OverflowError the operator would loop on.
        ({"budget": {"pauseTimeout": "99999999999h"}}, "spec.budget.pauseTimeout"),
        ({"workers": {"scaleDownDelay": "2562048h"}}, "spec.workers.scaleDownDelay"),
        (
            {"retryPolicies": {"email": {"initialInterval": "99999999999h"}}},
            "spec.retryPolicies.email.initialInterval",
        ),
    ],
)
def test_schema_errors_name_the_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        check({**good(), **patch})
    assert field in str(err.value)
    assert isinstance(err.value, kopf.PermanentError)
    assert err.value.name == "agent"


@pytest.mark.parametrize(
    ("patch", "field", "price", "image"),
    [
        ({"search": {"provider": "http"}}, "spec.search.endpoint", 15.0, "img"),
        ({}, "spec.workers.image", 15.0, ""),
        ({"notify": {"email": {"to": ["a@b.c"]}}}, "spec.notify.email.smtpSecretRef", 15.0, "img"),
        ({"budget": {"maxUSDPerRun": 0.01}}, "spec.budget.maxUSDPerRun", 15.0, "img"),
        ({"topics": ["a", "   "]}, "spec.topics[1]", 15.0, "img"),
        # Another agent's default queue: its workers would take this agent's runs.
        (
            {"temporal": {"taskQueue": "steadfast.team-a.watch"}},
            "spec.temporal.taskQueue",
            15.0,
            "img",
        ),
        (
            {"temporal": {"taskQueue": "steadfast.ns.agent-2"}},
            "spec.temporal.taskQueue",
            15.0,
            "img",
        ),
        (
            {
                "budget": {"maxUSDPerRun": 0.01},
                "model": {"pricing": {"inputPerMTok": 1, "outputPerMTok": 100}},
            },
            "spec.budget.maxUSDPerRun",
            None,
            "img",
        ),
    ],
)
def test_semantic_errors(
    patch: dict[str, Any], field: str, price: float | None, image: str
) -> None:
    with pytest.raises(InvalidSpec) as err:
        check({**good(), **patch}, price=price, image=image)
    assert field in err.value.detail


@pytest.mark.parametrize(
    "queue", ["steadfast.ns.agent", "research", "steadfast-shared", "steadfast.x"]
)
def test_a_queue_of_its_own_or_no_agents_default_passes(queue: str) -> None:
    check({**good(), "temporal": {"taskQueue": queue}})


def test_a_quantity_may_be_a_whole_number_or_a_string_as_kubernetes_takes_it() -> None:
    # cpu: 2 is how most manifests write it: pydantic raised TypeError on it (a pattern
    # on int | str), which the operator could not report and retried for ever.
    resources = {"requests": {"cpu": 2, "memory": "512Mi"}, "limits": {"cpu": "1.5"}}
    spec = parse_spec("ns", "agent", {**good(), "workers": {"resources": resources}})
    assert spec.workers.resources["requests"] == {"cpu": 2, "memory": "512Mi"}
    check({**good(), "workers": {"resources": {"limits": {"cpu": "+2", "memory": "1e3"}}}})


def test_an_unpriced_model_is_invalid_naming_name_and_pricing() -> None:
    # No price for model.name and no model.pricing: the run's budget could not be
    # kept, so the operator must refuse the spec instead of starting workers.
    raw = {**good(), "model": {"name": "claude-unpriced-9"}}
    with pytest.raises(InvalidSpec) as err:
        validate(AGENT, raw, render.Defaults(image="img", temporal_address="t:7233"))
    assert err.value.reason == "InvalidSpec"
    assert "spec.model.name" in err.value.detail
    assert "'claude-unpriced-9'" in err.value.detail
    assert "spec.model.pricing" in err.value.detail


def test_an_unpriced_model_with_pricing_passes() -> None:
    pricing = {"inputPerMTok": 1, "outputPerMTok": 2}
    raw = {**good(), "model": {"name": "claude-unpriced-9", "pricing": pricing}}
    spec = validate(AGENT, raw, render.Defaults(image="img", temporal_address="t:7233"))
    assert spec.model.pricing is not None


def test_repeated_topics_collapse() -> None:
    spec = parse_spec("ns", "a", {**good(), "topics": ["x", "y", "x"]})
    assert spec.unique_topics() == ["x", "y"]


def test_example_parses() -> None:
    raw = yaml.safe_load((ROOT / "examples" / "market-watch.yaml").read_text())["spec"]
    assert (
        parse_spec("research", "market-watch", raw).workers.scale_down_delay.total_seconds() == 60
    )


def test_committed_crds_match_the_generator() -> None:
    rendered = crdgen.render()
    for path in ("crds", "charts/steadfast/crds"):
        committed = (ROOT / path / "researchagents.steadfast.dev.yaml").read_text()
        assert committed == rendered, f"{path} drifted: run python -m steadfast_contract.crdgen"


def test_every_duration_of_the_crd_is_read_by_a_cel_rule() -> None:
    """The API server refuses a duration longer than Go's only where a CEL rule parses
    it: every duration field has one, so such a value is refused at kubectl apply."""
    durations, unread = [], []

    def walk(node: dict[str, Any], where: str) -> None:
        if node.get("pattern") == DURATION_PATTERN:
            durations.append(where)
            rules = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
            if not any("duration(self)" in r for r in rules):
                unread.append(where)
        for name, child in node.get("properties", {}).items():
            walk(child, f"{where}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}[]")

    walk(crdgen.spec_schema(), "spec")
    assert "spec.budget.pauseTimeout" in durations  # had no rule of its own
    assert "spec.retryPolicies.email.initialInterval" in durations
    assert not unread


def test_the_crd_bounds_the_fetch_timeout_as_the_model_does() -> None:
    """The model takes 1s to 10m; the CRD refused nothing, so a value outside them was
    accepted at kubectl apply and only the operator said it was invalid."""
    research = crdgen.spec_schema()["properties"]["research"]["properties"]
    timeout = research["tools"]["properties"]["fetchPage"]["properties"]["timeout"]
    rules = [r["rule"] for r in timeout["x-kubernetes-validations"]]
    assert rules == ["duration(self) >= duration('1s')", "duration(self) <= duration('10m')"]
    for outside in ("500ms", "11m"):
        with pytest.raises(InvalidSpec):
            check({**good(), "research": {"tools": {"fetchPage": {"timeout": outside}}}})


def _walk(schema: dict[str, Any], where: str) -> list[str]:
    missing = []
    if "description" not in schema:
        missing.append(where)
    for key, sub in (schema.get("properties") or {}).items():
        missing += _walk(sub, f"{where}.{key}")
    if "items" in schema:
        missing += _walk(schema["items"], f"{where}[]")
    return missing


def test_every_spec_field_is_described_and_typed() -> None:
    spec = crdgen.spec_schema()
    assert _walk(spec, "spec") == []
    leaves: list[tuple[str, dict[str, Any]]] = []

    def leaves_of(s: dict[str, Any], where: str) -> None:
        if s.get("type") == "object" and "properties" in s:
            for k, v in s["properties"].items():
                leaves_of(v, f"{where}.{k}")
        else:
            leaves.append((where, s))

    leaves_of(spec, "spec")
    for where, leaf in leaves:
        assert "type" in leaf or "additionalProperties" in leaf, where
        if leaf.get("type") == "string":
            assert "maxLength" in leaf, where
        if leaf.get("type") in ("integer", "number"):
            assert "minimum" in leaf, where
            assert "maximum" in leaf, where


@pytest.mark.parametrize("name", ["a.b", "1abc", "a" * 57, "x" * 60])
def test_a_name_the_children_cannot_use_is_invalid(name: str) -> None:
    # <name>-worker names a Service: a DNS-1035 label of at most 63 characters.
    agent = render.AgentRef(name=name, namespace="ns", uid="uid-1")
    with pytest.raises(InvalidSpec) as err:
        validate(agent, good(), render.Defaults(image="img", temporal_address="t:7233"))
    assert "metadata.name" in err.value.detail


@pytest.mark.parametrize("name", ["a", "a" * 56, "news-eu", "a1-b2"])
def test_names_the_children_can_use_pass(name: str) -> None:
    agent = render.AgentRef(name=name, namespace="ns", uid="uid-1")
    validate(agent, good(), render.Defaults(image="img", temporal_address="t:7233"))

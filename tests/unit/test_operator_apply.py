"""The comparison behind idempotent apply: what counts as a difference."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from steadfast_operator import apply, render
from steadfast_operator.spec import parse_spec

pytestmark = pytest.mark.unit

AGENT = render.AgentRef("a", "ns", "uid")
SPEC_RAW = {"topics": ["t"], "search": {"endpoint": "http://s/"}, "workers": {"maxReplicas": 3}}


def rendered() -> dict[str, dict[str, Any]]:
    spec = parse_spec("ns", "a", SPEC_RAW)
    objs = render.children(AGENT, spec, render.Defaults(image="i", temporal_address="t"))
    return {o["kind"]: o for o in objs}


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Decimal("0.5")), ("0.5", Decimal("0.5")), ("1Gi", Decimal(2**30)), ("1e3", 1000)],
)
def test_quantity(text: str, value: Decimal) -> None:
    assert apply.quantity(text) == value


def test_server_defaults_do_not_count_as_differences() -> None:
    dep = rendered()["Deployment"]
    live = {
        **dep,
        "status": {"replicas": 2},
        "metadata": {**dep["metadata"], "resourceVersion": "7", "generation": 3},
        "spec": {**dep["spec"], "replicas": 4, "revisionHistoryLimit": 10},
    }
    live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/x"
    assert apply.covers(live, apply.owned_view(dep))


def test_canonicalised_quantities_are_equal() -> None:
    desired = {"resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}}
    live = {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}
    assert apply.covers(live, desired)
    assert not apply.covers(
        {"resources": {"requests": {"cpu": "400m"}}}, {"resources": {"requests": {"cpu": "0.5"}}}
    )


def test_changed_owned_field_is_a_difference() -> None:
    dep = rendered()["Deployment"]
    live = {**dep, "spec": {**dep["spec"]}}
    live["spec"]["template"] = {**dep["spec"]["template"], "metadata": {"annotations": {}}}
    assert not apply.covers(live, apply.owned_view(dep))


def test_replace_keeps_what_others_own() -> None:
    objs = rendered()
    live_dep = {
        "metadata": {
            "resourceVersion": "9",
            "annotations": {"deployment.kubernetes.io/revision": "2"},
        },
        "spec": {"replicas": 5},
    }
    body = apply.merged_for_replace(objs["Deployment"], live_dep)
    assert body["spec"]["replicas"] == 5
    assert body["metadata"]["resourceVersion"] == "9"
    assert body["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    live_svc = {"metadata": {"resourceVersion": "3"}, "spec": {"clusterIP": "10.0.0.9"}}
    assert apply.merged_for_replace(objs["Service"], live_svc)["spec"]["clusterIP"] == "10.0.0.9"


def test_first_difference_names_the_field() -> None:
    desired = {"spec": {"template": {"a": 1, "resources": {"requests": {"cpu": "0.5"}}}}}
    live = {"spec": {"template": {"a": 1, "resources": {"requests": {"cpu": "500m"}}}}}
    assert apply.first_difference(live, desired) is None
    live["spec"]["template"]["a"] = 2
    assert apply.first_difference(live, desired) == ".spec.template.a"

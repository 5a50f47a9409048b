"""The spec model is the one description: the CRD, the README table and the worker's
configuration are derived from it and agree with it."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from steadfast_contract import crdgen, crdschema, fieldtable, models
from steadfast_contract.config import WorkerConfig
from steadfast_contract.durations import format_duration
from steadfast_contract.spec import AgentSpec, BudgetSpec, PricingSpec, RetryPoliciesSpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]


def test_generated_crd_equals_the_committed_one_as_data() -> None:
    """Order-insensitive twin of the byte-for-byte drift test in test_operator_spec."""
    committed = yaml.safe_load((ROOT / "crds" / "researchagents.steadfast.dev.yaml").read_text())
    assert committed == crdgen.crd()


def test_readme_table_is_generated_from_the_model() -> None:
    readme = (ROOT / "README.md").read_text()
    assert fieldtable.between_markers(readme) == fieldtable.table(), (
        "README.md's field table is out of date: run "
        "python -m steadfast_contract.fieldtable --write README.md"
    )


def test_table_lists_every_spec_field() -> None:
    table = fieldtable.table()
    for path, _ in _leaves(crdschema.spec_schema(), ""):
        assert f"| `{path}` |" in table, path


def format_duration_s(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))


def test_retry_defaults_are_stated_once() -> None:
    """The CRD shows, and the worker layers over, the wire dataclass's defaults."""
    seed = models.RetryPolicies()
    assert RetryPoliciesSpec().resolve() == seed
    assert WorkerConfig().retry_policies.resolve() == seed
    shown = crdschema.spec_schema()["properties"]["retryPolicies"]["default"]
    for name in ("llm", "search", "database", "email"):
        policy: models.RetryPolicySpec = getattr(seed, name)
        expected: dict[str, Any] = {
            "initialInterval": format_duration_s(policy.initial_interval_seconds),
            "backoffCoefficient": policy.backoff_coefficient,
            "maximumAttempts": policy.maximum_attempts,
        }
        if policy.maximum_interval_seconds is not None:
            expected["maximumInterval"] = format_duration_s(policy.maximum_interval_seconds)
        assert shown[name] == expected, name


def test_model_defaults_are_the_wire_defaults() -> None:
    spec = crdschema.spec_schema()["properties"]
    assert spec["model"]["default"]["name"] == models.DEFAULT_MODEL
    assert spec["model"]["default"]["maxTokens"] == models.DEFAULT_MAX_TOKENS
    assert spec["budget"]["default"]["maxUSDPerRun"] == models.DEFAULT_MAX_USD_PER_RUN
    settings = models.RunSettings()
    config = WorkerConfig()
    assert (settings.model, settings.max_tokens) == (config.model.name, config.model.max_tokens)
    assert (config.model.name, config.model.max_tokens) == (
        models.DEFAULT_MODEL,
        models.DEFAULT_MAX_TOKENS,
    )
    assert config.budget.max_usd_per_run == settings.max_usd_per_run


def test_worker_configuration_shares_the_spec_sections() -> None:
    fields = WorkerConfig.model_fields
    assert fields["budget"].annotation is BudgetSpec
    assert fields["retry_policies"].annotation is RetryPoliciesSpec
    model_fields = fields["model"].annotation.model_fields  # type: ignore[union-attr]
    assert PricingSpec in getattr(model_fields["pricing"].annotation, "__args__", ())


def test_the_crd_defaults_are_a_valid_spec() -> None:
    """What the API server fills in must pass the model (CEL aside)."""
    spec = crdschema.spec_schema()
    filled = {
        k: copy.deepcopy(v["default"]) for k, v in spec["properties"].items() if "default" in v
    }
    parsed = AgentSpec.model_validate({**filled, "topics": ["t"]})
    assert parsed.retry_policies.resolve() == models.RetryPolicies()
    assert parsed.workers.scale_down_delay.total_seconds() == 60


def _leaves(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, sub in schema.get("properties", {}).items():
        where = f"{path}.{name}" if path else name
        yield where, sub
        if sub.get("type") == "object":
            yield from _leaves(sub, where)


def _spec_with(path: str, value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"topics": ["t"]}
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if part == "pricing":
            node.update(inputPerMTok=1, outputPerMTok=1)
    node[parts[-1]] = value
    return doc


def _out_of_bounds() -> Iterator[tuple[str, Any]]:
    for path, leaf in _leaves(crdschema.spec_schema(), ""):
        if leaf.get("type") in ("integer", "number"):
            yield path, leaf["maximum"] + 1
            yield path, leaf["minimum"] - 1
        elif leaf.get("type") == "string" and "enum" in leaf:
            yield path, "not-" + leaf["enum"][0]
        elif leaf.get("type") == "string" and "pattern" not in leaf:
            yield path, "x" * (leaf["maxLength"] + 1)
        elif leaf.get("type") == "array":
            yield path, ["x"] * (leaf.get("maxItems", 0) + 1)
    yield "temporal.tls.secretName", "Not_A_Name"
    yield "model.apiKeySecretRef.key", "a/b"
    yield "notify.email.to", ["no-at-sign"]
    yield "workers.resources.limits", {"memory": "lots"}
    yield "workers.scaleDownDelay", "soon"
    yield "notify.approvalTimeout", "0s"


@pytest.mark.parametrize(("path", "value"), list(_out_of_bounds()))
def test_the_model_refuses_what_the_crd_refuses(path: str, value: Any) -> None:
    """Generated from the model, the CRD's bounds must also be the model's."""
    if path == "topics" and isinstance(value, list):
        value = [f"t{i}" for i in range(len(value))]  # a set: the items must differ
    with pytest.raises(ValidationError) as err:
        AgentSpec.model_validate(_spec_with(path, value))
    locs = [".".join(str(p) for p in e["loc"]) for e in err.value.errors()]
    assert any(loc.startswith(path) for loc in locs), (path, locs)


def test_a_section_without_a_schema_is_an_error() -> None:
    """A field type the generator cannot express fails loudly, not as an empty schema."""
    from steadfast_contract.specbase import SpecModel

    class Odd(SpecModel):
        when: complex = 0j

    with pytest.raises(TypeError, match="no schema"):
        crdschema._model(Odd, "", None, {})


#: Values that end up in a mail header, with what would break it. Python's and Go's
#: regular expressions disagree on ``\s`` (Go's omits ``\v`` and U+2028), so each of
#: these must be refused by the pattern both the model and the API server apply.
HEADER_BREAKERS = [
    ("topics", ["AI market\nBcc: everyone@example.com"]),
    ("topics", ["AI market\r"]),
    ("topics", ["AI market\u2028trends"]),
    ("notify.email.from", "bot@example.com\nBcc: everyone@example.com"),
    ("notify.email.from", "bot@example.com\u2029"),
    ("notify.email.to", ["reviewer@example.com\u000bcc"]),
    ("notify.email.to", ["reviewer@example.com\u2028"]),
    ("notify.email.to", ["reviewer@exa\u0085mple.com"]),
]


@pytest.mark.parametrize(("path", "value"), HEADER_BREAKERS)
def test_header_values_refuse_line_breaks(path: str, value: Any) -> None:
    with pytest.raises(ValidationError) as err:
        AgentSpec.model_validate(_spec_with(path, value))
    locs = [".".join(str(p) for p in e["loc"]) for e in err.value.errors()]
    assert any(loc.startswith(path) for loc in locs), (path, locs)


def _patterns(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        if isinstance(schema.get("pattern"), str):
            yield schema["pattern"]
        for sub in schema.values():
            yield from _patterns(sub)
    elif isinstance(schema, list):
        for sub in schema:
            yield from _patterns(sub)


def test_crd_patterns_mean_the_same_to_every_engine() -> None:
    """The API server (Go RE2) and the model (Rust regex) must refuse the same strings.

    Their shorthand classes differ: Go's ``\\s`` is ``[\\t\\n\\f\\r ]`` while Rust's is
    Unicode whitespace, so a pattern written with ``\\s`` let ``\\v`` and U+2028 into a
    recipient through the API server that the model refused. Patterns spell out classes.
    """
    shorthand = re.compile(r"\\[sSdDwWbB]")
    used = [p for p in _patterns(crdgen.crd()) if shorthand.search(p)]
    assert not used, used


def test_header_values_keep_what_people_write() -> None:
    spec = AgentSpec.model_validate(
        {
            "topics": ["Marché de l'IA en 2026 — tendances", "中文 主题", "tabs\u00a0and nbsp"],
            "notify": {"email": {"to": ["rené@exämple.com"], "from": "bot@example.com"}},
        }
    )
    assert len(spec.topics) == 3


def test_the_crd_refuses_names_the_children_cannot_use() -> None:
    schema = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    (rule,) = [r for r in schema.get("x-kubernetes-validations", []) if "metadata" in r["rule"]]
    assert "self.metadata.name.size() <= 56" in rule["rule"]
    assert "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')" in rule["rule"]
    assert "metadata.name" in rule["message"]
    assert "56" in rule["message"]
    committed = yaml.safe_load((ROOT / "crds" / "researchagents.steadfast.dev.yaml").read_text())
    assert (
        committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
        == schema["x-kubernetes-validations"]
    )

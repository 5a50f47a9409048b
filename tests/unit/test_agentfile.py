"""The ResearchAgent → worker configuration mapping that dev, run and the operator share."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from steadfast_contract import agentfile
from steadfast_contract.agentfile import AgentError

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str = "market-watch.yaml") -> dict[str, Any]:
    return dict(agentfile.load_manifest(EXAMPLES / name))


def test_example_maps_to_config() -> None:
    cfg = agentfile.worker_config_from_agent(example())
    assert cfg.agent == "market-watch"
    assert cfg.namespace == "research"
    assert cfg.task_queue == "steadfast.research.market-watch"
    assert cfg.temporal.address == "temporal-frontend.temporal:7233"
    assert cfg.model.name == "claude-sonnet-4-6"
    assert cfg.model.max_tokens == 2000
    assert cfg.model.api_key_env == "ANTHROPIC_API_KEY"
    assert cfg.storage.postgres_dsn_env == "STEADFAST_POSTGRES_DSN"
    assert cfg.worker.max_concurrent_activities == 20
    policies = cfg.retry_policies.resolve()
    assert policies.database.initial_interval_seconds == 0.5
    assert policies.database.backoff_coefficient == 1.5
    assert policies.email.maximum_attempts == 1
    assert policies.llm.maximum_interval_seconds == 60.0


def test_every_example_is_valid() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        agent = agentfile.agent_from_manifest(agentfile.load_manifest(path))
        assert agent.topics, path


def test_topics_are_deduplicated_in_order() -> None:
    m = example()
    m["spec"] = {**m["spec"], "topics": ["b", "a", "b"]}
    assert agentfile.topics_from_agent(m) == ["b", "a"]


def test_overrides_point_at_local_services() -> None:
    cfg = agentfile.worker_config_from_agent(
        example(),
        temporal_address="127.0.0.1:7999",
        model_base_url="http://127.0.0.1:9000",
        search_endpoint="http://127.0.0.1:9001/search",
        sqlite_path="/tmp/x.db",
        metrics_port=0,
    )
    assert cfg.temporal.address == "127.0.0.1:7999"
    assert cfg.model.base_url == "http://127.0.0.1:9000"
    assert cfg.search.endpoint == "http://127.0.0.1:9001/search"
    assert cfg.storage.sqlite_path == "/tmp/x.db"
    assert cfg.worker.metrics_port == 0


def test_tls_secret_maps_to_mounted_files() -> None:
    m = copy.deepcopy(example())
    m["spec"]["temporal"]["tls"] = {"secretName": "temporal-client"}
    cfg = agentfile.worker_config_from_agent(m, tls_dir="/certs")
    assert cfg.temporal.tls.secret_dir == "/certs"
    assert cfg.temporal.tls.enabled
    assert (cfg.temporal.tls.cert_file, cfg.temporal.tls.ca_file) == ("", "")


def test_api_key_file_only_when_the_operator_mounts_one() -> None:
    m = copy.deepcopy(example())
    m["spec"]["temporal"]["apiKeySecretRef"] = {"name": "temporal-cloud", "key": "k"}
    local = agentfile.worker_config_from_agent(m)
    assert (local.temporal.api_key_file, local.temporal.api_key_env) == ("", "TEMPORAL_API_KEY")
    mounted = agentfile.worker_config_from_agent(m, api_key_file="/keys/api-key")
    assert mounted.temporal.api_key_file == "/keys/api-key"
    del m["spec"]["temporal"]["apiKeySecretRef"]
    assert agentfile.worker_config_from_agent(m, api_key_file="/k").temporal.api_key_file == ""


def test_no_secret_value_reaches_the_config() -> None:
    m = copy.deepcopy(example())
    m["spec"]["model"]["apiKeySecretRef"] = {"name": "anthropic", "key": "sk-not-a-value"}
    dumped = agentfile.worker_config_from_agent(m).model_dump_json()
    assert "sk-not-a-value" not in dumped
    assert "anthropic" not in dumped.replace('"provider":"anthropic"', "")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda m: m.update(apiVersion="v1"), "apiVersion"),
        (lambda m: m.update(kind="Deployment"), "kind"),
        (lambda m: m["metadata"].pop("name"), "metadata.name"),
        (lambda m: m["spec"].update(topicz=["x"]), "spec.topicz"),
        (lambda m: m["spec"]["model"].update(maxTokenz=1), "spec.model.maxTokenz"),
        (lambda m: m["spec"].update(topics=["ok", ""]), "spec.topics[1]"),
        (lambda m: m["spec"]["model"].update(maxTokens=0), "maxTokens"),
        (lambda m: m["spec"]["budget"].update(maxUSDPerRun=-1), "maxUSDPerRun"),
        (
            lambda m: m["spec"]["retryPolicies"]["llm"].update(initialInterval="2 parsecs"),
            "initialInterval",
        ),
        (lambda m: m["spec"]["search"].update(endpoint=""), "endpoint"),
        (lambda m: m["spec"].update(model="claude"), "spec.model"),
        (lambda m: m["spec"]["model"].update(nmae="x"), "spec.model.nmae"),
        (
            lambda m: m["spec"]["retryPolicies"]["llm"].update(initialIntervl="2s"),
            "spec.retryPolicies.llm.initialIntervl",
        ),
        (lambda m: m["spec"]["notify"].update(email={"too": []}), "spec.notify.email.too"),
        (
            lambda m: m["spec"]["workers"].update(resources={"claims": {}}),
            "spec.workers.resources.claims",
        ),
        (lambda m: m["spec"]["workers"].update(autoscaler="hpa"), "spec.workers.autoscaler"),
        (lambda m: m["spec"]["budget"].update(maxUSDPerDay=0), "spec.budget.maxUSDPerDay"),
        (lambda m: m["spec"].update(topics=["ok", "  "]), "spec.topics[1]"),
        (lambda m: m["spec"].update(topics=["ok", "a\nBcc: x@example.com"]), "spec.topics[1]"),
        (
            lambda m: m["spec"]["notify"].update(email={"from": "a@example.com\nBcc: x@y.z"}),
            "spec.notify.email.from",
        ),
        (
            lambda m: m["spec"]["notify"].update(email={"to": ["ok@example.com", "a@b.c\u2028"]}),
            "spec.notify.email.to[1]",
        ),
    ],
)
def test_bad_manifest_names_the_field(mutate: Any, field: str) -> None:
    m = copy.deepcopy(example())
    mutate(m)
    with pytest.raises(AgentError, match=field.replace("[", r"\[").replace("]", r"\]")):
        agentfile.agent_from_manifest(m)


def test_unknown_field_lists_the_known_ones() -> None:
    """A typo is refused by the spec model itself, naming what would have been accepted."""
    m = copy.deepcopy(example())
    m["spec"]["model"]["nmae"] = "claude-sonnet-4-6"
    with pytest.raises(AgentError) as err:
        agentfile.agent_from_manifest(m)
    message = str(err.value)
    assert "spec.model.nmae: unknown field" in message
    known = "apiKeySecretRef, baseURL, contextTokens, maxTokens, name, pricing, provider"
    assert f"(known: {known})" in message


def test_a_validated_spec_maps_as_its_manifest_does() -> None:
    """Code that already holds an AgentSpec (the operator) skips the second validation."""
    from steadfast_contract.spec import AgentSpec

    m = example()
    spec = AgentSpec.model_validate(m["spec"])
    by_spec = agentfile.worker_config_from_spec("market-watch", "research", spec)
    assert by_spec == agentfile.worker_config_from_agent(m)


def test_load_manifest_picks_the_research_agent(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n"
        + (EXAMPLES / "approval-gate.yaml").read_text()
    )
    agent = agentfile.agent_from_manifest(agentfile.load_manifest(path))
    assert agent.name == "approval-gate"
    assert agent.config.notify.require_approval is True


def test_load_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="cannot read"):
        agentfile.load_manifest(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed")
    with pytest.raises(AgentError, match="not valid YAML"):
        agentfile.load_manifest(bad)
    other = tmp_path / "other.yaml"
    other.write_text("kind: ConfigMap\n")
    with pytest.raises(AgentError, match="no document with kind"):
        agentfile.load_manifest(other)


def test_examples_pass_the_operators_spec_validation() -> None:
    """The examples are what the e2e tests `kubectl apply`; the operator must accept them."""
    from steadfast_operator.spec import parse_spec

    for path in sorted(EXAMPLES.glob("*.yaml")):
        manifest = agentfile.load_manifest(path)
        spec = parse_spec(
            manifest["metadata"]["namespace"], manifest["metadata"]["name"], manifest["spec"]
        )
        assert spec.unique_topics() == agentfile.topics_from_agent(manifest), path

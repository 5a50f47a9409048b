"""Which edits roll the workers, and how long a stopped worker pod may take: table tests.

A worker pod rolls only when something it reads changes; a pod told to stop (by a
scale-down, a rollout or a drain) is given longer than any activity may run.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from steadfast_contract.config import parse_config
from steadfast_contract.starter import settings_from_config
from steadfast_operator import drain, render
from steadfast_operator.spec import parse_spec
from steadfast_worker import lastscrape, workflows

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[2] / "examples" / "market-watch.yaml"
AGENT = render.AgentRef(name="market-watch", namespace="research", uid="uid-1")
DEFAULTS = render.Defaults(image="steadfast/worker:test", temporal_address="temporal:7233")


def example_spec() -> dict[str, Any]:
    return dict(yaml.safe_load(EXAMPLE.read_text())["spec"])


def edited(path: str, value: Any) -> dict[str, Any]:
    raw = example_spec()
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return raw


def kids(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = parse_spec(AGENT.namespace, AGENT.name, raw)
    return {o["kind"]: o for o in render.children(AGENT, spec, DEFAULTS)}


def template(raw: dict[str, Any]) -> dict[str, Any]:
    return dict(kids(raw)["Deployment"]["spec"]["template"])


#: Edits that reach runs through their input (or the operator alone), never the worker.
NOT_READ_BY_THE_WORKER = [
    ("budget.maxUSDPerDay", 7.5),
    ("model.maxTokens", 1000),
    ("budget.maxUSDPerRun", 0.25),
    ("retryPolicies.llm.maximumAttempts", 9),
    ("retryPolicies.database", {"initialInterval": "1s"}),
    ("notify.requireApproval", True),
    ("notify.approvalTimeout", "2h"),
    ("storage.saveTimeout", "2h"),
    ("topics", ["another topic"]),
    ("schedule", "0 6 * * 1"),
    ("workers.maxReplicas", 3),
    ("workers.scaleDownDelay", "5m"),
    ("deletionPolicy", "Abandon"),
    ("research", {"strategy": "deep", "maxTurns": 8}),
    ("research.tools.fetchPage.denyDomains", ["example.com"]),
]

#: Edits the worker process reads: each must roll the pods.
READ_BY_THE_WORKER = [
    ("model.name", "claude-haiku-4-5"),
    ("model.baseURL", "http://gateway.example:8080"),
    ("model.apiKeySecretRef", {"name": "other", "key": "api-key"}),
    ("search.endpoint", "http://search.example/q"),
    ("storage.postgresSecretRef", {"name": "other-db", "key": "dsn"}),
    ("notify.email.to", ["someone@example.com"]),
    ("temporal.address", "elsewhere:7233"),
    ("temporal.tls", {"secretName": "temporal-client"}),
    ("workers.maxConcurrentActivities", 3),
    ("workers.image", "steadfast/worker:other"),
]


@pytest.mark.parametrize(("path", "value"), NOT_READ_BY_THE_WORKER)
def test_an_edit_the_worker_never_reads_leaves_the_pod_template_alone(
    path: str, value: Any
) -> None:
    assert template(edited(path, value)) == template(example_spec())


@pytest.mark.parametrize(("path", "value"), READ_BY_THE_WORKER)
def test_an_edit_the_worker_reads_rolls_the_pods(path: str, value: Any) -> None:
    # A changed pod template is what makes the Deployment controller roll the pods:
    # through the config hash, or the template's own image, env or volumes.
    assert template(edited(path, value)) != template(example_spec())


#: A new value for each path the hash leaves out, in the worker configuration's terms.
NEW_VALUES: dict[str, Any] = {
    "budget": {"maxUSDPerRun": 0.25, "maxUSDPerDay": 7.5},
    "retryPolicies": {"llm": {"maximumAttempts": 9}},
    "model.maxTokens": 1000,
    "model.contextTokens": 100_000,
    "storage.saveTimeout": "2h",
    "notify.requireApproval": True,
    "notify.approvalTimeout": "2h",
    "worker.heartbeatTimeout": "25s",
    "research": {"strategy": "deep", "maxTurns": 8},
}


@pytest.mark.parametrize("path", sorted({".".join(p) for p in drain.RUN_INPUT_ONLY}))
def test_what_the_hash_leaves_out_reaches_runs_through_their_input(path: str) -> None:
    """Each path the hash leaves out changes the input the operator starts runs with,
    so its new value reaches every run started after the edit, without a roll."""
    rendered = yaml.safe_load(kids(example_spec())["ConfigMap"]["data"][render.CONFIG_FILE])
    changed = yaml.safe_load(yaml.safe_dump(rendered))
    *parents, last = path.split(".")
    node = changed
    for key in parents:
        node = node[key]
    node[last] = NEW_VALUES[path]
    before, after = parse_config(rendered), parse_config(changed)
    assert settings_from_config(after) != settings_from_config(before)
    assert drain.template_hash(after, []) == drain.template_hash(before, [])


def test_the_configuration_still_carries_every_section() -> None:
    """The hash leaves sections out; the ConfigMap does not (it documents the agent)."""
    cm = kids(edited("budget.maxUSDPerDay", 7.5))["ConfigMap"]
    cfg = yaml.safe_load(cm["data"][render.CONFIG_FILE])
    assert cfg["budget"]["maxUSDPerDay"] == 7.5


def test_a_stopped_worker_outlasts_its_longest_activity() -> None:
    cm = kids(example_spec())["ConfigMap"]
    cfg = parse_config(yaml.safe_load(cm["data"][render.CONFIG_FILE]))
    pod = template(example_spec())["spec"]
    # The workflow's own timeouts: a report may stream for up to ten minutes.
    longest = max(workflows.LLM_START_TO_CLOSE, workflows.IO_START_TO_CLOSE)
    assert longest == timedelta(minutes=10)
    assert cfg.worker.graceful_shutdown >= longest
    grace = timedelta(seconds=pod["terminationGracePeriodSeconds"])
    assert grace >= cfg.worker.graceful_shutdown + timedelta(seconds=drain.EXIT_MARGIN_SECONDS)
    assert pod["terminationGracePeriodSeconds"] == 650
    # Room for the worker's wait for its last scrape, and a few seconds to exit.
    assert drain.EXIT_MARGIN_SECONDS >= lastscrape.LONGEST_WAIT_SECONDS + 5

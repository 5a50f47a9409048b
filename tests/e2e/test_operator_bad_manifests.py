"""Bad ResearchAgents, table-driven: refused by the API server, or Ready=False with a reason.

What the CRD's schema and CEL rules can judge is refused at ``kubectl apply``
with a field-level message (checked by server-side dry run, which runs the
same validation without storing). What passes the schema but cannot work is
accepted and reported by the operator as ``Ready=False`` with a reason and a
message naming the fix, while a good agent in the same namespace keeps working
and the operator keeps running.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.operator_env import (
    Operator,
    agent_manifest,
    apply,
    condition,
    get,
    secret,
    wait_for,
)
from tests.support.kube import REPO, KubeCluster
from tests.support.sim import SimHandle

pytestmark = pytest.mark.e2e


Patch = dict[str, Any]

#: (id, spec patch, fragment of the API server's message)
REJECTED: list[tuple[str, Patch, str]] = [
    (
        "min-above-max",
        {"workers": {"minReplicas": 5, "maxReplicas": 2}},
        "minReplicas cannot exceed",
    ),
    ("max-zero", {"workers": {"maxReplicas": 0}}, "spec.workers.maxReplicas"),
    ("unknown-autoscaler", {"workers": {"autoscaler": "hpa"}}, "spec.workers.autoscaler"),
    ("unknown-deletion-policy", {"deletionPolicy": "Orphan"}, "spec.deletionPolicy"),
    ("no-topics", {"topics": []}, "spec.topics"),
    ("duplicate-topics", {"topics": ["a", "a"]}, "spec.topics[1]"),
    (
        "max-interval-below-initial",
        {"retryPolicies": {"llm": {"initialInterval": "2s", "maximumInterval": "1s"}}},
        "maximumInterval must be at least initialInterval",
    ),
    ("duration-words", {"workers": {"scaleDownDelay": "2 seconds"}}, "spec.workers.scaleDownDelay"),
    ("cron-words", {"schedule": "every day"}, "not a cron"),
    (
        "run-budget-above-day",
        {"budget": {"maxUSDPerRun": 100, "maxUSDPerDay": 10}},
        "maxUSDPerRun cannot exceed maxUSDPerDay",
    ),
    (
        "secret-ref-without-key",
        {"model": {"apiKeySecretRef": {"name": "llm", "key": ""}}},
        "name and key must be given together",
    ),
    ("unknown-provider", {"model": {"provider": "openai"}}, "spec.model.provider"),
    ("zero-max-tokens", {"model": {"maxTokens": 0}}, "spec.model.maxTokens"),
    ("unknown-field", {"workers": {"replica": 3}}, "replica"),
    ("bad-email", {"notify": {"email": {"to": ["not-an-email"]}}}, "spec.notify.email.to[0]"),
    # Go's \s (the old pattern's) is ASCII: \v and U+2028 passed the API server.
    ("to-vt", {"notify": {"email": {"to": ["a@b.c\vx"]}}}, "spec.notify.email.to[0]"),
    ("to-u2028", {"notify": {"email": {"to": ["a@b.c\u2028"]}}}, "spec.notify.email.to[0]"),
    ("from-newline", {"notify": {"email": {"from": "a@b.c\nBcc: x@y.z"}}}, "email.from"),
    ("topic-newline", {"topics": ["t\nBcc: x@y.z"]}, "spec.topics[0]"),
    ("approval-timeout-zero", {"notify": {"approvalTimeout": "0s"}}, "must be at least 1s"),
    ("bad-quantity", {"workers": {"resources": {"requests": {"cpu": "lots"}}}}, "cpu"),
    ("negative-budget", {"budget": {"maxUSDPerRun": -1}}, "spec.budget.maxUSDPerRun"),
]

#: (name, spec patch, expected Ready reason, fragment of the message)
UNREADY: list[tuple[str, Patch, str, str]] = [
    (
        "missing-secret",
        {"model": {"apiKeySecretRef": {"name": "nope", "key": "k"}}},
        "SecretMissing",
        "nope",
    ),
    (
        "missing-key",
        {"model": {"apiKeySecretRef": {"name": "llm", "key": "other"}}},
        "SecretMissing",
        "'other'",
    ),
    (
        "no-endpoint",
        {"search": {"provider": "http", "endpoint": ""}},
        "InvalidSpec",
        "spec.search.endpoint",
    ),
    (
        "budget-below-one-call",
        {
            "budget": {"maxUSDPerRun": 0.001},
            "model": {"pricing": {"inputPerMTok": 3.0, "outputPerMTok": 15.0}},
        },
        "BudgetBelowOneCall",
        "spec.budget.maxUSDPerRun",
    ),
    (
        "unreachable-temporal",
        {"temporal": {"address": "127.0.0.1:1"}},
        "TemporalUnreachable",
        "127.0.0.1:1",
    ),
    ("keda-missing", {"workers": {"autoscaler": "keda"}}, "KedaNotInstalled", "KEDA"),
    ("impossible-cron", {"schedule": "99 * * * *"}, "ScheduleInvalid", "spec.schedule"),
    (
        "unpriced-model",
        {"model": {"name": "claude-unpriced-9"}},
        "InvalidSpec",
        "spec.model.pricing",
    ),
    (
        "email-without-smtp",
        {"notify": {"email": {"to": ["a@example.com"]}}},
        "InvalidSpec",
        "smtpSecretRef",
    ),
    # Reports would go to a pod's disk and vanish with it: no worker at all.
    (
        "no-durable-store",
        {"storage": {"postgresSecretRef": {"name": "", "key": ""}}},
        "NoDurableStore",
        "spec.storage.postgresSecretRef",
    ),
]


def patched(base: dict[str, Any], patch: Patch) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out["spec"].get(key), dict):
            merged = dict(out["spec"][key])
            for k, v in value.items():
                merged[k] = (
                    {**merged[k], **v}
                    if isinstance(v, dict) and isinstance(merged.get(k), dict)
                    else v
                )
            out["spec"][key] = merged
        else:
            out["spec"][key] = value
    return out


@pytest.mark.parametrize(("case", "patch", "message"), REJECTED, ids=[r[0] for r in REJECTED])
@pytest.mark.hostile
def test_schema_refuses(
    crd: None, kube_cluster: KubeCluster, op_sim: SimHandle, case: str, patch: Patch, message: str
) -> None:
    manifest = patched(agent_manifest(case, "default", op_sim, ["t"]), patch)
    if case == "no-topics":
        del manifest["spec"]["topics"]
    out = apply(kube_cluster, manifest, check=False, dry_run=True)
    assert "is invalid" in out or "unknown field" in out or "Invalid value" in out, out
    assert message in out, out


#: (id, the stored agent's spec patch, the edit) of the Temporal placement an agent keeps.
IMMUTABLE: list[tuple[str, Patch, Patch]] = [
    ("queue-set", {}, {"temporal": {"taskQueue": "elsewhere"}}),
    ("queue-changed", {"temporal": {"taskQueue": "q1"}}, {"temporal": {"taskQueue": "q2"}}),
    ("queue-cleared", {"temporal": {"taskQueue": "q1"}}, {"temporal": {"taskQueue": ""}}),
    ("namespace-changed", {}, {"temporal": {"namespace": "other"}}),
    # Another Temporal: a new ledger, so the day's budget began again from zero there
    # (the audit: $0.0641 billed in one day against $0.04).
    ("address-changed", {}, {"temporal": {"address": "127.0.0.1:1"}}),
]


@pytest.mark.parametrize(("case", "stored", "edit"), IMMUTABLE, ids=[r[0] for r in IMMUTABLE])
@pytest.mark.hostile
def test_an_agent_keeps_its_temporal_address_namespace_and_task_queue(
    crd: None, kube_cluster: KubeCluster, op_sim: SimHandle, case: str, stored: Patch, edit: Patch
) -> None:
    # Running runs stay on the queue they were started on, and so does the day's
    # ledger: a move would strand them and start the day's budget from zero.
    first = patched(agent_manifest(f"keep-{case}", "default", op_sim, ["t"]), stored)
    apply(kube_cluster, first)
    try:
        out = apply(kube_cluster, patched(first, edit), check=False)
        assert "is invalid" in out, out
        assert "cannot change once the agent exists" in out, out
        key = next(iter(edit["temporal"]))
        assert f"spec.temporal.{key}" in out, out
        kept = get(kube_cluster, "ra", "default", f"keep-{case}")
        assert kept is not None
        assert kept["spec"]["temporal"][key] == first["spec"].get("temporal", {}).get(
            key, {"taskQueue": "", "namespace": "default"}.get(key, "")
        )
        # Every other field stays editable.
        out = apply(kube_cluster, patched(first, {"budget": {"maxUSDPerDay": 7}}), check=False)
        assert "configured" in out, out
    finally:
        kube_cluster.kubectl("delete", "ra", f"keep-{case}", "-n", "default", check=False)


@pytest.mark.parametrize("name", ["a.b", "1abc", "a" * 60], ids=["dot", "digit", "60-chars"])
@pytest.mark.hostile
def test_names_the_children_cannot_use_are_refused(
    crd: None, kube_cluster: KubeCluster, op_sim: SimHandle, name: str
) -> None:
    # The API server takes all three as names; <name>-worker (a Service) could not be made.
    out = apply(kube_cluster, agent_manifest(name, "default", op_sim, ["t"]), check=False)
    assert "is invalid" in out, out
    assert "metadata.name must be at most 56 characters" in out, out
    assert get(kube_cluster, "ra", "default", name) is None


@pytest.mark.hostile
def test_unworkable_agents_are_reported_and_isolated(
    operator: Operator, kube_cluster: KubeCluster, namespace: str, op_sim: SimHandle
) -> None:
    secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
    good = agent_manifest("good", namespace, op_sim, ["a good topic"])
    bad = [patched(agent_manifest(name, namespace, op_sim, ["t"]), p) for name, p, _, _ in UNREADY]
    apply(kube_cluster, *bad, good)

    def reasons() -> dict[str, str] | None:
        out = {}
        for name, _, reason, _ in UNREADY:
            ready = condition(get(kube_cluster, "ra", namespace, name), "Ready")
            if ready.get("reason") != reason:
                return None
            out[name] = ready["message"]
        return out

    messages = wait_for("every bad agent's Ready reason", reasons, timeout=90)
    for name, _, _, fragment in UNREADY:
        assert fragment in messages[name], (name, messages[name])
        ra = get(kube_cluster, "ra", namespace, name)
        assert condition(ra, "Ready")["status"] == "False"
    wait_for(
        "the good agent Ready with its Deployment",
        lambda: (
            condition(get(kube_cluster, "ra", namespace, "good"), "Ready").get("status") == "True"
            and get(kube_cluster, "deploy", namespace, "good-worker")
        ),
    )
    # Nothing half-made for agents that could not work.
    assert get(kube_cluster, "deploy", namespace, "missing-secret-worker") is None
    assert get(kube_cluster, "deploy", namespace, "no-durable-store-worker") is None
    assert operator.proc is not None
    assert operator.proc.poll() is None, "the operator must survive bad input"
    # A deletion waits for the agent's Temporal to confirm its runs and Schedules are
    # gone, and this one's never answers: the documented way out, or the fixture's
    # teardown would wait a minute for it.
    patch = json.dumps({"spec": {"deletionPolicy": "Abandon"}})
    kube_cluster.kubectl(
        "patch", "ra", "unreachable-temporal", "-n", namespace, "--type=merge", "-p", patch
    )


@pytest.mark.hostile
def test_a_task_queue_another_agent_uses_is_refused_to_the_later_agent(
    operator: Operator, kube_cluster: KubeCluster, namespace: str, op_sim: SimHandle
) -> None:
    """Workers of two agents on one queue would serve each other's runs with their own
    keys and stores (the workers refuse, and the runs fail): the agent that named the
    queue first keeps it, the later one is told at its status and gets no worker, until
    the first one is gone."""
    secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
    queue = {"temporal": {"address": "", "namespace": "default", "taskQueue": f"q-{namespace}"}}
    first = agent_manifest("queue-first", namespace, op_sim, ["t"], **queue)
    apply(kube_cluster, first)
    wait_for(
        "the first agent Ready",
        lambda: (
            condition(get(kube_cluster, "ra", namespace, "queue-first"), "Ready").get("status")
            == "True"
        ),
        timeout=90,
    )
    apply(kube_cluster, agent_manifest("queue-second", namespace, op_sim, ["t"], **queue))

    def refused() -> dict[str, Any] | None:
        ready = condition(get(kube_cluster, "ra", namespace, "queue-second"), "Ready")
        return ready if ready.get("reason") == "TaskQueueShared" else None

    ready = wait_for("the later agent refused its queue", refused, timeout=90)
    assert ready["status"] == "False"
    assert f"q-{namespace} is already the task queue of the agent queue-first" in ready["message"]
    assert get(kube_cluster, "deploy", namespace, "queue-second-worker") is None
    first_ready = condition(get(kube_cluster, "ra", namespace, "queue-first"), "Ready")
    assert first_ready["status"] == "True"

    # With the first agent gone the queue is free: the later agent takes it without
    # an edit of its own.
    kube_cluster.kubectl("delete", "ra", "queue-first", "-n", namespace, "--timeout=60s")
    wait_for(
        "the later agent Ready once the queue is free",
        lambda: (
            condition(get(kube_cluster, "ra", namespace, "queue-second"), "Ready").get("status")
            == "True"
        ),
        timeout=90,
    )
    assert get(kube_cluster, "deploy", namespace, "queue-second-worker") is not None


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_accepted(crd: None, kube_cluster: KubeCluster, path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    doc["metadata"]["namespace"] = "default"
    out = apply(kube_cluster, doc, dry_run=True)
    assert "created (server dry run)" in out, out

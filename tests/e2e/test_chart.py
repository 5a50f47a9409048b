"""The Helm chart against a real API server: admission, Pod Security, RBAC, Helm's lifecycle.

`helm template` proves the chart renders; only the API server proves the output
is valid Kubernetes (schemas, immutable fields, the restricted Pod Security
profile) and that the RBAC it grants lets the operator do its job and nothing
more. Pods never run real containers: kwok marks them Running, which is what the
chart controls (scheduling, admission, the Deployment's rollout).

The ServiceMonitor, PodMonitor and PrometheusRule objects are checked against
the Prometheus Operator's real CRDs, at the version ``hack/k8s-binaries`` pins and
fetches from the Go module proxy, so a field the upstream schema refuses fails
here, not in a user's cluster.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.test_operator_rbac import NAMESPACED_RULES
from tests.support.kube import KubeCluster, upstream_crd
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = str(REPO / "charts" / "steadfast")
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}


#: The Prometheus Operator CRDs the chart can render objects of.
MONITORING_CRDS = (
    "servicemonitors.monitoring.coreos.com",
    "podmonitors.monitoring.coreos.com",
    "prometheusrules.monitoring.coreos.com",
)


@pytest.fixture(scope="module")
def cluster(kube_cluster: KubeCluster) -> KubeCluster:
    """The session cluster with the ResearchAgent CRD and the real monitoring CRDs."""
    try:
        monitoring = [upstream_crd(name) for name in MONITORING_CRDS]
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    # Server-side, so the large upstream schemas are not copied into a
    # last-applied-configuration annotation as client-side apply would.
    files = [arg for path in monitoring for arg in ("-f", str(path))]
    kube_cluster.kubectl("apply", "--server-side", *files)
    kube_cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        *(f"crd/{name}" for name in MONITORING_CRDS), "crd/researchagents.steadfast.dev",
    )  # fmt: skip
    return kube_cluster


def make_namespace(cluster: KubeCluster, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
    return name


@pytest.fixture
def restricted_ns(cluster: KubeCluster) -> Iterator[str]:
    """A namespace that enforces (and warns about) the restricted Pod Security profile."""
    name = make_namespace(cluster, "chart")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def watched(cluster: KubeCluster) -> Iterator[list[str]]:
    """Two namespaces for the operator's namespace-list mode."""
    names = [make_namespace(cluster, "agents"), make_namespace(cluster, "agents")]
    yield names
    for name in names:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def set_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def test_helm_lint_is_clean(cluster: KubeCluster) -> None:
    proc = cluster.helm("lint", "--strict", CHART, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


#: Values combinations users will set; each rendering must be accepted by the API server.
MATRIX: dict[str, dict[str, str]] = {
    "defaults": {},
    "everything-on": {
        "metrics.serviceMonitor.enabled": "true",
        "workers.podMonitor.enabled": "true",
        "prometheusRule.enabled": "true",
        "networkPolicy.enabled": "true",
        "temporal.dev.enabled": "true",
        "dashboards.annotations.grafana_folder": "Steadfast",
    },
    "operator-podmonitor": {"metrics.podMonitor.enabled": "true"},
    "namespaces-mode": {"watch.scope": "namespaces"},
    "minimal": {
        "rbac.keda": "false",
        "metrics.service.enabled": "false",
        "dashboards.enabled": "false",
        "operator.replicas": "0",
    },
    "external-temporal-pinned": {
        "temporal.address": "temporal-frontend.temporal.svc:7233",
        "operator.image.digest": "sha256:" + "b" * 64,
        "workers.image.tag": "0.1.0-rc1",
        "networkPolicy.enabled": "true",
        "networkPolicy.apiServerCIDRs": "{10.0.0.1/32}",
    },
}


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_rendered_manifests_pass_server_side_dry_run_under_restricted_pod_security(
    cluster: KubeCluster, restricted_ns: str, watched: list[str], case: str
) -> None:
    values = dict(MATRIX[case])
    if values.get("watch.scope") == "namespaces":
        values["watch.namespaces"] = "{" + ",".join(watched) + "}"
    release = f"r{uuid.uuid4().hex[:6]}"
    rendered = cluster.helm(
        "template", release, CHART, "-n", restricted_ns, *set_args(values)
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert docs
    applied = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert applied.returncode == 0, applied.stderr
    assert "PodSecurity" not in applied.stderr, applied.stderr
    assert applied.stdout.count("(server dry run)") == len(docs)
    # Pod Security is enforced on Pods, not on Deployments: submit each pod template
    # as a Pod so the restricted profile is enforced, not merely warned about.
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": doc["metadata"]["name"], **doc["spec"]["template"]["metadata"]},
            "spec": doc["spec"]["template"]["spec"],
        }
        if "serviceAccountName" in pod["spec"]:
            pod["spec"]["serviceAccountName"] = "default"
        created = cluster.kubectl(
            "create", "--dry-run=server", "-n", restricted_ns, "-f", "-",
            input=json.dumps(pod), check=False,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr


def test_a_pod_template_that_breaks_the_profile_is_refused(
    cluster: KubeCluster, restricted_ns: str
) -> None:
    """Guards the test above: the namespace really enforces the restricted profile."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "steadfast/worker:0.1.0"}]},
    }
    created = cluster.kubectl(
        "create", "--dry-run=server", "-n", restricted_ns, "-f", "-",
        input=json.dumps(pod), check=False,
    )  # fmt: skip
    assert created.returncode != 0
    assert 'violates PodSecurity "restricted' in created.stderr


def can(
    cluster: KubeCluster,
    service_account: str,
    namespace: str,
    verb: str,
    group: str,
    resource: str,
    in_namespace: str | None,
) -> bool:
    """A SubjectAccessReview for the ServiceAccount, answered by the API server's RBAC."""
    resource, _, subresource = resource.partition("/")
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{namespace}:{service_account}",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
            "resourceAttributes": {
                "verb": verb,
                "group": group,
                "resource": resource,
                "subresource": subresource,
                **({"namespace": in_namespace} if in_namespace else {}),
            },
        },
    }
    out = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review))
    return bool(json.loads(out.stdout)["status"].get("allowed", False))


#: What the operator must be able to do wherever ResearchAgents live: the
#: namespaced rules it is proven to run on (tests/e2e/test_operator_rbac.py).
NEEDED = [
    (group, resource, verb)
    for rule in NAMESPACED_RULES
    for group in rule["apiGroups"]
    for resource in rule["resources"]
    for verb in rule["verbs"]
]
#: What it must not be able to do anywhere.
FORBIDDEN = [
    ("", "secrets", "list"),
    ("", "secrets", "create"),
    ("", "secrets", "update"),
    ("", "secrets", "delete"),
    ("", "pods", "create"),
    ("", "pods/exec", "create"),
    ("steadfast.dev", "researchagents", "create"),
    ("steadfast.dev", "researchagents", "delete"),
    ("apps", "deployments", "delete"),
    ("apps", "daemonsets", "create"),
    ("rbac.authorization.k8s.io", "rolebindings", "create"),
    ("", "serviceaccounts/token", "create"),
]


def operator_pods(cluster: KubeCluster, namespace: str, release: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    pods: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", selector
    )["items"]
    return [p for p in pods if "deletionTimestamp" not in p["metadata"]]


def running(pods: list[dict[str, Any]]) -> bool:
    return bool(pods) and all(p["status"].get("phase") == "Running" for p in pods)


def test_install_upgrade_uninstall_with_rbac_checked_both_ways(
    cluster: KubeCluster, restricted_ns: str, watched: list[str]
) -> None:
    release = f"sf{uuid.uuid4().hex[:6]}"
    sa = f"{release}-steadfast"
    installed = cluster.helm(
        "install", release, CHART, "-n", restricted_ns, "--wait", "--timeout", "120s",
        "--set", "temporal.dev.enabled=true", timeout=240,
    )  # fmt: skip
    # NOTES: warnings first, then the next command.
    notes = installed.stdout[installed.stdout.index("NOTES:") :]
    assert notes.index("WARNING: temporal.dev.enabled") < notes.index("kubectl -n")
    assert f"rollout status deployment/{release}-steadfast-operator" in notes

    wait_for(
        "operator pod Running",
        lambda: running(operator_pods(cluster, restricted_ns, release)),
        timeout=90,
    )
    dev = cluster.kubectl_json(
        "get", "pods", "-n", restricted_ns, "-l", "app.kubernetes.io/component=temporal-dev"
    )["items"]
    assert [p["status"]["phase"] for p in dev] == ["Running"]

    # Cluster mode: everything needed, in any namespace; nothing forbidden anywhere.
    for group, resource, verb in NEEDED:
        for ns in (watched[0], "default"):
            assert can(cluster, sa, restricted_ns, verb, group, resource, ns), (
                f"operator cannot {verb} {group}/{resource} in {ns}"
            )
    assert can(cluster, sa, restricted_ns, "list", "apiextensions.k8s.io",
               "customresourcedefinitions", None)  # fmt: skip
    for group, resource, verb in FORBIDDEN:
        assert not can(cluster, sa, restricted_ns, verb, group, resource, watched[0]), (
            f"operator may {verb} {group}/{resource}"
        )
    assert not can(cluster, sa, restricted_ns, "delete", "apiextensions.k8s.io",
                   "customresourcedefinitions", None)  # fmt: skip
    assert not can(cluster, sa, restricted_ns, "delete", "", "namespaces", None)

    # Upgrade to a namespace list: the old pod is replaced, rights shrink to the list.
    first_pod = operator_pods(cluster, restricted_ns, release)[0]["metadata"]["uid"]
    cluster.helm(
        "upgrade", release, CHART, "-n", restricted_ns, "--reuse-values",
        "--set", "watch.scope=namespaces",
        "--set", f"watch.namespaces={{{watched[0]}}}", "--set", "rbac.keda=false",
    )  # fmt: skip

    def replaced() -> bool:
        pods = operator_pods(cluster, restricted_ns, release)
        return running(pods) and all(p["metadata"]["uid"] != first_pod for p in pods)

    try:
        wait_for("the upgraded operator pod Running", replaced, timeout=180)
    except AssertionError as err:
        pods = cluster.kubectl("get", "pods,rs", "-n", restricted_ns, "-o", "wide").stdout
        raise AssertionError(f"{err}\n{pods}") from None
    deployment = cluster.kubectl_json(
        "get", "deployment", "-n", restricted_ns, f"{release}-steadfast-operator"
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[1:3] == ["--namespace", watched[0]]
    for group, resource, verb in NEEDED:
        if group == "keda.sh":
            assert not can(cluster, sa, restricted_ns, verb, group, resource, watched[0])
            continue
        assert can(cluster, sa, restricted_ns, verb, group, resource, watched[0])
        assert not can(cluster, sa, restricted_ns, verb, group, resource, watched[1]), (
            f"operator may still {verb} {group}/{resource} in an unwatched namespace"
        )

    cluster.helm(
        "uninstall", release, "-n", restricted_ns, "--wait", "--timeout", "120s", timeout=240
    )
    wait_for(
        "operator pods gone", lambda: not operator_pods(cluster, restricted_ns, release), timeout=90
    )
    leftover = cluster.kubectl(
        "get", "clusterrole,clusterrolebinding", "-l", f"app.kubernetes.io/instance={release}",
        "-o", "name",
    ).stdout.strip()  # fmt: skip
    assert not leftover
    assert not can(cluster, sa, restricted_ns, "get", "steadfast.dev", "researchagents",
                   watched[0])  # fmt: skip
    # Helm never deletes CRDs: the agents survive an uninstall.
    cluster.kubectl("get", "crd", "researchagents.steadfast.dev")


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"operator": {"metricsPort": "nine-thousand"}}, "metricsPort"),
        ({"watch": {"namespace": ["research"]}}, "namespace"),
        ({"temporal": {"dev": {"enabeld": True}}}, "enabeld"),
    ],
)
def test_a_bad_values_file_is_refused_naming_the_value(
    cluster: KubeCluster, restricted_ns: str, tmp_path: Path, values: dict[str, Any], named: str
) -> None:
    path = tmp_path / "bad-values.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = cluster.helm("install", "bad", CHART, "-n", restricted_ns, "-f", str(path), check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert named in proc.stderr
    listed = cluster.helm("list", "-n", restricted_ns, "-q").stdout.split()
    assert "bad" not in listed


def test_contradictory_values_are_refused_before_anything_is_created(
    cluster: KubeCluster, restricted_ns: str
) -> None:
    proc = cluster.helm(
        "install", "contra", CHART, "-n", restricted_ns,
        "--set", "temporal.dev.enabled=true", "--set", "temporal.address=t:7233", check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "leave temporal.address empty" in proc.stderr
    with pytest.raises(subprocess.CalledProcessError):
        cluster.kubectl("get", "deployment", "-n", restricted_ns, "contra-steadfast-operator")

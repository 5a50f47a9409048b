"""``autoscaler: keda`` against KEDA's real CRDs: what the operator renders survives them.

KEDA itself cannot run here (no images), but its CRDs come from the KEDA Go
module at a pinned version (``hack/k8s-binaries``). Their structural schemas
make the API server reject a wrong type and silently *prune* an unknown field,
so the test reads the objects back and checks that every field the operator
wrote is still there: the ScaledObject's Temporal trigger and the
TriggerAuthentication that hands KEDA the agent's own Temporal credentials.
It also checks that with KEDA as the owner the operator never writes the
Deployment's replicas, and that switching back to the built-in autoscaler
deletes both KEDA objects.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.operator_env import (
    Scene,
    agent_manifest,
    apply,
    condition,
    get,
    tls_secret,
    wait_for,
)
from tests.support.kube import KubeCluster, upstream_crd
from tests.support.tlsproxy import TLSProxy, make_test_pki

from steadfast_operator import render
from steadfast_operator.spec import parse_spec

pytestmark = pytest.mark.e2e


KEDA_CRDS = ("scaledobjects.keda.sh", "triggerauthentications.keda.sh")


@pytest.fixture
def keda_crds(kube_cluster: KubeCluster) -> Iterator[None]:
    """KEDA's CRDs for this test only: other tests expect the KEDA API to be absent."""
    for name in KEDA_CRDS:
        kube_cluster.kubectl("apply", "--server-side", "-f", str(upstream_crd(name)))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in KEDA_CRDS)
    )
    try:
        yield
    finally:
        kube_cluster.kubectl("delete", "crd", *KEDA_CRDS, "--timeout=60s", check=False)


def pruned(live: Any, written: Any, at: str = "") -> list[str]:
    """Paths of fields in ``written`` that the API server did not keep in ``live``."""
    if isinstance(written, dict):
        if not isinstance(live, dict):
            return [at or "."]
        return [p for k, v in written.items() for p in pruned(live.get(k), v, f"{at}.{k}")]
    if isinstance(written, list):
        if not isinstance(live, list) or len(live) != len(written):
            return [at]
        pairs = zip(live, written, strict=True)
        return [p for i, (lv, wv) in enumerate(pairs) for p in pruned(lv, wv, f"{at}[{i}]")]
    return [] if live == written else [at]


def rendered_children(manifest: dict[str, Any], temporal_address: str) -> dict[str, Any]:
    """What the operator renders for ``manifest``, by kind (its pure render functions)."""
    meta, raw = manifest["metadata"], manifest["spec"]
    agent = render.AgentRef(meta["name"], meta["namespace"], "uid")
    spec = parse_spec(agent.namespace, agent.name, raw)
    defaults = render.Defaults(image="steadfast/worker:e2e", temporal_address=temporal_address)
    return {o["kind"]: o for o in render.children(agent, spec, defaults)}


def test_keda_objects_pass_the_real_schemas_and_replicas_stay_keda_s(
    keda_crds: None, scene: Scene, temporal_address: str, tmp_path: Path
) -> None:
    pki = make_test_pki(tmp_path / "pki")
    with TLSProxy(temporal_address, pki) as proxy:
        tls_secret(
            scene.cluster, scene.namespace, "temporal-mtls", pki.client_cert, pki.client_key, pki.ca
        )
        topics = [f"keda topic {i}" for i in range(4)]
        workers = {"autoscaler": "keda", "minReplicas": 0, "maxReplicas": 5}
        temporal = {"address": proxy.address, "tls": {"secretName": "temporal-mtls"}}
        apply(
            scene.cluster,
            agent_manifest(
                "kedad", scene.namespace, scene.sim, topics, workers=workers, temporal=temporal
            ),
        )

        so = wait_for(
            "the ScaledObject",
            lambda: get(scene.cluster, "scaledobject", scene.namespace, "kedad-worker"),
        )
        auth = get(scene.cluster, "triggerauthentication", scene.namespace, "kedad-worker")
        assert auth is not None
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "temporal"
        assert trigger["metadata"]["endpoint"] == proxy.address
        assert trigger["authenticationRef"] == {"name": "kedad-worker"}
        assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (0, 5)
        assert so["spec"]["scaleTargetRef"]["name"] == "kedad-worker"
        refs = {r["parameter"]: r["key"] for r in auth["spec"]["secretTargetRef"]}
        assert refs == {"cert": "tls.crt", "key": "tls.key", "ca": "ca.crt"}
        # Nothing the operator wrote was pruned by KEDA's schemas (a pruned field
        # would also make every reconcile see a difference and write again).
        manifest = agent_manifest(
            "kedad", scene.namespace, scene.sim, topics, workers=workers, temporal=temporal
        )
        rendered = rendered_children(manifest, temporal_address)
        for live in (so, auth):
            assert pruned(live["spec"], rendered[live["kind"]]["spec"]) == []
            owners = live["metadata"]["ownerReferences"]
            assert [o["kind"] for o in owners] == ["ResearchAgent"]

        # Four runs wait with no worker: the built-in autoscaler would scale to
        # two; with KEDA as the owner the operator leaves replicas alone.
        def listed() -> bool:
            ra = get(scene.cluster, "ra", scene.namespace, "kedad")
            return len(((ra or {}).get("status") or {}).get("runs") or []) == len(topics)

        wait_for("the four runs in status", listed)
        time.sleep(5)  # several status intervals (1 s) in which it could have scaled
        dep = get(scene.cluster, "deploy", scene.namespace, "kedad-worker")
        assert dep is not None
        assert dep["spec"]["replicas"] == 0

        # Back to the built-in autoscaler: both KEDA objects go, replicas follow.
        workers["autoscaler"] = "builtin"
        apply(
            scene.cluster,
            agent_manifest(
                "kedad", scene.namespace, scene.sim, topics, workers=workers, temporal=temporal
            ),
        )
        wait_for(
            "the KEDA objects deleted",
            lambda: (
                get(scene.cluster, "scaledobject", scene.namespace, "kedad-worker") is None
                and get(scene.cluster, "triggerauthentication", scene.namespace, "kedad-worker")
                is None
            ),
        )
        wait_for(
            "the built-in autoscaler to scale up",
            lambda: (
                (
                    (get(scene.cluster, "deploy", scene.namespace, "kedad-worker") or {}).get(
                        "spec"
                    )
                    or {}
                ).get("replicas", 0)
                > 0
            ),
        )
        scene.cluster.kubectl("delete", "ra", "kedad", "-n", scene.namespace, "--timeout=60s")


def test_an_agent_without_a_durable_store_is_taken_from_keda(keda_crds: None, scene: Scene) -> None:
    """Workers that must not run (``NoDurableStore``) stay at zero with KEDA too.

    Workers rendered before a durable store was required (an operator upgrade)
    would keep reports on their pods' disks, so the operator scales them to zero;
    with KEDA owning replicas it would scale them up again on the next backlog, so
    the operator deletes the agent's ScaledObject first.
    """
    topics = ["keda without a store"]
    workers = {"autoscaler": "keda", "minReplicas": 0, "maxReplicas": 5}
    manifest = agent_manifest("kedas", scene.namespace, scene.sim, topics, workers=workers)
    apply(scene.cluster, manifest)
    wait_for(
        "the ScaledObject",
        lambda: get(scene.cluster, "scaledobject", scene.namespace, "kedas-worker"),
    )
    # KEDA, had it run here, would have scaled the workers up on the waiting run.
    scene.cluster.kubectl("scale", "deploy", "kedas-worker", "--replicas=2", "-n", scene.namespace)
    del manifest["spec"]["storage"]
    apply(scene.cluster, manifest)

    def not_ready() -> bool:
        ra = get(scene.cluster, "ra", scene.namespace, "kedas")
        return bool(ra and condition(ra, "Ready").get("reason") == "NoDurableStore")

    wait_for("Ready False, NoDurableStore", not_ready)
    wait_for(
        "the ScaledObject deleted",
        lambda: get(scene.cluster, "scaledobject", scene.namespace, "kedas-worker") is None,
    )

    def replicas() -> int:
        dep = get(scene.cluster, "deploy", scene.namespace, "kedas-worker") or {}
        return int((dep.get("spec") or {}).get("replicas", -1))

    wait_for("the workers scaled to zero", lambda: replicas() == 0)
    scene.cluster.kubectl("delete", "ra", "kedas", "-n", scene.namespace, "--timeout=60s")

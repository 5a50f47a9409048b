"""The readiness probe the operator renders gets its answer from the worker it runs.

Kubernetes counts a worker pod toward a rollout once its readiness probe passes, so
the probe must ask what the worker answers only while it polls Temporal. Here the
operator renders two agents' Deployments, :class:`tests.e2e.hostpods.HostKubelet`
runs each pod's worker from the pod's own ConfigMap and env, and asks it what the
pod's rendered ``httpGet`` probe would (the probe's named port must be the port that
configuration serves): 200 from the worker that polls, 503 from the one whose
Temporal address never answers, though it serves the port a TCP probe opened. (kwok,
which plays the kubelet here, marks pods Ready itself, so no rollout's wait is shown.)
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from tests.e2e.hostpods import HostKubelet
from tests.e2e.operator_env import Scene, agent_manifest, apply, wait_for
from tests.support.sim import running_sim

pytestmark = pytest.mark.e2e


def test_the_rendered_readiness_probe_follows_the_worker(scene: Scene, tmp_path: Path) -> None:
    workers = {"minReplicas": 1, "maxReplicas": 1}
    with (
        running_sim() as sim,
        HostKubelet(scene.cluster, scene.namespace, "prober", tmp_path / "a", metrics=True) as good,
        HostKubelet(scene.cluster, scene.namespace, "stray", tmp_path / "b", metrics=True) as bad,
        socket.socket() as silent,
    ):
        # Takes connections and never answers: a wrong address behind a firewall.
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        stray = agent_manifest("stray", scene.namespace, sim, ["stray topic"], workers=workers)
        stray["spec"]["temporal"]["address"] = f"127.0.0.1:{silent.getsockname()[1]}"
        stray["spec"]["deletionPolicy"] = "Abandon"  # its teardown need not wait for Temporal
        apply(
            scene.cluster,
            agent_manifest("prober", scene.namespace, sim, ["probe topic"], workers=workers),
            stray,
        )
        # The stray worker first: its connect gives up (and it exits) after 30 s.
        wait_for("the stray agent's worker", lambda: len(bad.running()) == 1, timeout=90)
        (connecting,) = bad.running()
        wait_for(
            "the stray worker to serve its port",
            lambda: bad.readiness(connecting) is not None,
            timeout=20,
        )
        assert bad.readiness(connecting) == (503, "connecting to Temporal")
        wait_for("the other agent's worker", lambda: len(good.running()) == 1, timeout=60)
        (polling,) = good.running()
        wait_for(
            "the probe to pass once the worker polls",
            lambda: good.readiness(polling) == (200, "polling"),
            timeout=60,
        )
        assert not good.errors, good.errors
        assert not bad.errors, bad.errors

"""`helm template` of the chart, for the unit tests that read what it renders.

Helm is the binary built by hack/k8s-binaries; without it the tests marked
``needs_helm`` skip, saying how to build it (under CI they run and fail loudly).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube_binaries import cache_dir

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "steadfast"
RELEASE = "steadfast"
NAMESPACE = "steadfast-system"


def helm_binary() -> str | None:
    try:
        helm = cache_dir("STEADFAST_K8S_BIN", "--print-bin-dir") / "helm"
    except subprocess.CalledProcessError:
        return None
    return str(helm) if os.access(helm, os.X_OK) else None


HELM = helm_binary()
# A laptop without helm skips; CI must have it, so there the tests run and fail loudly.
needs_helm = pytest.mark.skipif(
    HELM is None and os.environ.get("CI", "").lower() != "true",
    reason="helm is not built yet: run hack/k8s-binaries (make k8s-binaries)",
)


def helm_template(
    *sets: str,
    values: dict[str, Any] | None = None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    args = [HELM, "template", release, str(CHART), "--namespace", namespace]
    for item in sets:
        args += ["--set", item]
    if values is not None:
        args += ["--values", "-"]
    return subprocess.run(
        args,
        input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HELM_CACHE_HOME": "/tmp/steadfast-helm-cache"},
    )


def render(
    *sets: str,
    values: dict[str, Any] | None = None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[Any]:
    proc = helm_template(*sets, values=values, release=release, namespace=namespace)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def refused(*sets: str, values: dict[str, Any] | None = None) -> str:
    proc = helm_template(*sets, values=values)
    assert proc.returncode != 0, f"rendered although it should not:\n{proc.stdout[:400]}"
    return proc.stderr


def only(docs: list[Any], kind: str, pred: Callable[[Any], bool] = lambda _d: True) -> Any:
    found = [d for d in docs if d["kind"] == kind and pred(d)]
    assert len(found) == 1, f"{len(found)} {kind} rendered"
    return found[0]


def operator_container(docs: list[Any]) -> Any:
    deployment = only(docs, "Deployment", lambda d: d["metadata"]["name"].endswith("-operator"))
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_of(container: Any) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}

"""Where the Kubernetes binaries and upstream CRDs that ``hack/k8s-binaries`` builds live.

The build script owns the cache layout; these helpers ask it (or the
``STEADFAST_K8S_BIN`` / ``STEADFAST_K8S_CRDS`` overrides) instead of guessing,
so the tests, ``hack/cluster`` and the benchmarks find the same files.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
K8S_BINARIES_SCRIPT = REPO / "hack" / "k8s-binaries"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
    "helm",
)


@dataclass(frozen=True)
class KubeBinaries:
    """Where the binaries built by ``hack/k8s-binaries`` live."""

    bin_dir: Path

    def path(self, name: str) -> str:
        return str(self.bin_dir / name)

    @classmethod
    def locate(cls) -> KubeBinaries:
        """``$STEADFAST_K8S_BIN``, else the cache dir the build script reports."""
        bin_dir = cache_dir("STEADFAST_K8S_BIN", "--print-bin-dir")
        missing = [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]
        if missing:
            raise FileNotFoundError(
                f"Kubernetes binaries missing in {bin_dir}: {', '.join(missing)}; "
                "build them with `hack/k8s-binaries` (or `make k8s-binaries`)"
            )
        return cls(bin_dir)


def cache_dir(env: str, flag: str) -> Path:
    """``$env`` when set, else the directory ``hack/k8s-binaries FLAG`` reports (no build)."""
    configured = os.environ.get(env)
    if configured:
        return Path(configured)
    out = subprocess.run(
        [str(K8S_BINARIES_SCRIPT), flag], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def upstream_crds_dir() -> Path:
    """``$STEADFAST_K8S_CRDS``, else the crds dir the build script reports."""
    return cache_dir("STEADFAST_K8S_CRDS", "--print-crds-dir")


def upstream_crd(name: str) -> Path:
    """The pinned upstream CRD file for ``name``, e.g. ``servicemonitors.monitoring.coreos.com``.

    ``hack/k8s-binaries`` copies them out of the Prometheus Operator and KEDA Go
    modules, named as upstream names them: ``<group>_<plural>.yaml``.
    """
    plural, _, group = name.partition(".")
    path = upstream_crds_dir() / f"{group}_{plural}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"upstream CRD {name} missing: no {path}; fetch it with `hack/k8s-binaries` "
            "(`hack/k8s-binaries --crds-only` skips the Kubernetes build)"
        )
    return path


def pinned_versions() -> dict[str, str]:
    """The versions ``hack/k8s-binaries`` pins, e.g. ``{"kubernetes": "v1.34.4", ...}``."""
    out = subprocess.run(
        [str(K8S_BINARIES_SCRIPT), "--versions"], capture_output=True, text=True, check=True
    )
    versions: dict[str, str] = json.loads(out.stdout)
    return versions

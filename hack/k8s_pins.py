"""What hack/k8s-binaries builds and fetches: the pinned versions and how each is built.

Kept apart from the build steps so that a version bump is a change to this file
alone. Only the standard library is used (the script runs before the venv exists).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

KUBERNETES = "v1.34.4"
ETCD = "v3.6.8"
KWOK = "v0.7.0"
HELM = "v3.19.5"
PROMETHEUS_OPERATOR = "v0.85.0"
KEDA = "v2.21.0"


@dataclass(frozen=True)
class UpstreamMod:
    """What the wrapper needs to know about the pinned module's own go.mod."""

    go: str
    godebug: list[tuple[str, str]]
    requires: dict[str, str]
    replaces: list[dict[str, dict[str, str]]]
    release_time: str


@dataclass(frozen=True)
class Component:
    name: str
    module: str
    version: str
    #: binary name -> main package path
    binaries: dict[str, str]
    ldflags: Callable[[UpstreamMod], list[str]]
    #: Maps an upstream local replace (module path) to the published version to use.
    local_replace_version: Callable[[str], str | None] = field(default=lambda _path: None)


def _kube_ldflags(up: UpstreamMod) -> list[str]:
    # The same variables kubernetes' hack/lib/version.sh stamps, so `kubectl version`
    # and Helm's kubeVersion checks see the real release, not v0.0.0-master.
    major, minor = KUBERNETES.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": KUBERNETES,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        # The module proxy does not say which commit a tag is; blank beats a placeholder.
        "gitCommit": "",
        "buildDate": up.release_time,
    }
    flags = []
    for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        flags += [f"-X {pkg}.{key}={value}" for key, value in values.items()]
    return flags


def _staging_version(path: str) -> str | None:
    # Staging modules are published as v0.<minor>.<patch> of the kubernetes release.
    if path.startswith("k8s.io/"):
        return "v0." + KUBERNETES.lstrip("v").split(".", 1)[1]
    return None


def _etcd_ldflags(_up: UpstreamMod) -> list[str]:
    # etcd's version string is a constant in go.etcd.io/etcd/api/v3/version.
    return ["-X go.etcd.io/etcd/api/v3/version.GitSHA=module-" + ETCD]


def _kwok_ldflags(_up: UpstreamMod) -> list[str]:
    return [
        f"-X sigs.k8s.io/kwok/pkg/consts.Version={KWOK}",
        f"-X sigs.k8s.io/kwok/pkg/consts.KubeVersion={KUBERNETES}",
    ]


def _helm_ldflags(up: UpstreamMod) -> list[str]:
    # Helm's Makefile derives its default kube version from the client-go it links.
    client_go = up.requires.get("k8s.io/client-go", "v0.0.0")
    k8s_minor = client_go.lstrip("v").split(".")[1]
    return [
        f"-X helm.sh/helm/v3/internal/version.version={HELM}",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
        f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={k8s_minor}",
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
        f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={k8s_minor}",
    ]


def _single(
    name: str, module: str, version: str, main: str, ldflags: Callable[[UpstreamMod], list[str]]
) -> Component:
    """A component that builds one binary, named like the component, from package ``main``."""
    return Component(name, module, version, {name: main}, ldflags)


COMPONENTS = [
    Component(
        name="kubernetes",
        module="k8s.io/kubernetes",
        version=KUBERNETES,
        binaries={
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            "kubectl": "k8s.io/kubernetes/cmd/kubectl",
        },
        ldflags=_kube_ldflags,
        local_replace_version=_staging_version,
    ),
    # The kubelet of the real-pod tier's node: a component of its own, so adding it left the
    # control plane's stamp (and its cached binaries) alone. Its wrapper names the kubelet in
    # a `tool` line, which is what makes `go mod tidy` resolve the kubelet's dependencies.
    Component(
        name="kubelet",
        module="k8s.io/kubernetes",
        version=KUBERNETES,
        binaries={"kubelet": "k8s.io/kubernetes/cmd/kubelet"},
        ldflags=_kube_ldflags,
        local_replace_version=_staging_version,
    ),
    _single("etcd", "go.etcd.io/etcd/server/v3", ETCD, "go.etcd.io/etcd/server/v3", _etcd_ldflags),
    _single("kwok", "sigs.k8s.io/kwok", KWOK, "sigs.k8s.io/kwok/cmd/kwok", _kwok_ldflags),
    _single("helm", "helm.sh/helm/v3", HELM, "helm.sh/helm/v3/cmd/helm", _helm_ldflags),
]


@dataclass(frozen=True)
class CrdSource:
    """A pinned module some CRD YAMLs are copied from."""

    name: str
    module: str
    version: str
    #: Paths inside the module; each is copied to the crds dir under its base name.
    files: tuple[str, ...]


CRD_SOURCES = [
    CrdSource(
        name="prometheus-operator",
        module="github.com/prometheus-operator/prometheus-operator",
        version=PROMETHEUS_OPERATOR,
        files=tuple(
            f"example/prometheus-operator-crd/monitoring.coreos.com_{plural}.yaml"
            for plural in ("servicemonitors", "podmonitors", "prometheusrules")
        ),
    ),
    CrdSource(
        name="keda",
        module="github.com/kedacore/keda/v2",
        version=KEDA,
        files=tuple(
            f"config/crd/bases/keda.sh_{plural}.yaml"
            for plural in ("scaledobjects", "triggerauthentications")
        ),
    ),
]

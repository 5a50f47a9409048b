"""Structural lint of the container images' Dockerfiles.

There is no Docker engine here, so the images cannot be built in CI; what can be
checked is that they keep the properties the chart relies on: a pinned base (no
``latest``, which would change under a running cluster), a separate build stage,
a numeric non-root USER matching the chart's runAsUser (runAsNonRoot can only
verify a numeric UID), the ``steadfast`` entrypoint with the right verb, and the
source each build stage installs: the contract, the command line and the image's
runtime package, never the dev sandbox (``dev/``). The install itself is checked
by tests/integration/test_image_install.py.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from steadfast_cli.commands import operator as operator_verb
from steadfast_operator import render
from steadfast_operator.settings import OperatorConfig

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
IMAGES = {
    "worker": REPO / "images" / "worker.Dockerfile",
    "operator": REPO / "images" / "operator.Dockerfile",
}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def build_stage_sources(text: str) -> list[str]:
    """The repository paths the build stage COPYs (not what crosses between stages)."""
    sources: list[str] = []
    for word, rest in instructions(text):
        if word == "COPY" and not rest.startswith("--from"):
            *srcs, _dest = rest.split()
            sources += [s.rstrip("/") for s in srcs if not s.startswith("--")]
    return sources


def base_images(steps: list[tuple[str, str]]) -> list[str]:
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    images = []
    for word, rest in steps:
        if word == "FROM":
            ref = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref))
    return images


def chart_run_as_user() -> int:
    helpers = (REPO / "charts" / "steadfast" / "templates" / "_helpers.tpl").read_text()
    match = re.search(r"runAsUser: (\d+)", helpers)
    assert match, "the chart's pod securityContext sets no runAsUser"
    return int(match.group(1))


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_base_image_is_pinned_by_version(name: str) -> None:
    images = base_images(instructions(IMAGES[name].read_text()))
    assert len(images) >= 2, "multi-stage: a build stage and a runtime stage"
    for image in images:
        _repo, _, tag = image.partition(":")
        assert tag, f"{image} has no tag"
        assert "latest" not in tag
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{image}: pin a full version, not {tag!r}"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_runtime_stage_runs_as_the_charts_numeric_non_root_user(name: str) -> None:
    steps = instructions(IMAGES[name].read_text())
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    users = [rest for word, rest in steps[last_from:] if word == "USER"]
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "runAsNonRoot can only verify a numeric UID"
    # The chart runs the operator (and the dev server) with this UID, the operator
    # runs worker pods with render.RUN_AS: one UID everywhere.
    assert int(uid) == chart_run_as_user() == render.RUN_AS != 0
    assert gid.isdigit()
    assert int(gid) != 0
    # Only the venv crosses from the build stage; the runtime stage installs nothing.
    runtime = steps[last_from:]
    assert any(w == "COPY" and r.startswith("--from=build") for w, r in runtime)
    assert not any(w == "RUN" and "pip install" in r for w, r in runtime)


@pytest.mark.parametrize(("name", "verb"), [("worker", "worker"), ("operator", "operator")])
def test_entrypoint_is_steadfast_with_its_verb(name: str, verb: str) -> None:
    steps = instructions(IMAGES[name].read_text())
    entrypoints = [rest for word, rest in steps if word == "ENTRYPOINT"]
    cmds = [rest for word, rest in steps if word == "CMD"]
    assert entrypoints[-1] == '["steadfast"]', "exec form, so SIGTERM reaches the process"
    assert yaml.safe_load(cmds[-1])[0] == verb


def test_operator_image_exposes_the_charts_ports() -> None:
    values = yaml.safe_load((REPO / "charts" / "steadfast" / "values.yaml").read_text())
    steps = instructions(IMAGES["operator"].read_text())
    exposed = {int(p) for word, rest in steps if word == "EXPOSE" for p in rest.split()}
    assert {values["operator"]["metricsPort"], values["operator"]["healthPort"]} <= exposed


def test_operator_ports_agree_in_the_image_the_cli_and_the_chart() -> None:
    """``steadfast operator`` run by hand listens where the chart and the image say."""
    values = yaml.safe_load((REPO / "charts" / "steadfast" / "values.yaml").read_text())
    chart = (values["operator"]["metricsPort"], values["operator"]["healthPort"])
    parser = argparse.ArgumentParser()
    operator_verb.configure(parser)
    defaults = parser.parse_args([])
    cli = (defaults.metrics_port, defaults.health_port)
    config = (OperatorConfig().metrics_port, OperatorConfig().health_port)
    assert config == cli, f"OperatorConfig {config}, CLI {cli}"
    steps = instructions(IMAGES["operator"].read_text())
    exposed = [int(p) for word, rest in steps if word == "EXPOSE" for p in rest.split()]
    assert cli == chart == tuple(exposed), f"CLI {cli}, chart {chart}, image EXPOSE {exposed}"


def test_chart_defaults_point_at_these_images() -> None:
    values = yaml.safe_load((REPO / "charts" / "steadfast" / "values.yaml").read_text())
    for name, path in IMAGES.items():
        repo = values["operator" if name == "operator" else "workers"]["image"]["repository"]
        title = re.search(r'org\.opencontainers\.image\.title="([^"]+)"', path.read_text())
        assert title, path.name
        assert repo.endswith(name), (repo, path.name)


def test_chart_worker_pod_monitor_matches_the_pods_the_operator_renders() -> None:
    """The PodMonitor's selector, ports and agent label follow render.py's worker pods."""
    values = yaml.safe_load((REPO / "charts" / "steadfast" / "values.yaml").read_text())
    monitor = values["workers"]["podMonitor"]
    pod_labels = render.labels(render.AgentRef(name="market-watch", namespace="research", uid="u"))
    assert monitor["selector"].items() <= pod_labels.items()
    assert pod_labels[monitor["agentPodLabel"]] == "market-watch"
    steps = instructions(IMAGES["worker"].read_text())
    exposed = {int(p) for word, rest in steps if word == "EXPOSE" for p in rest.split()}
    assert exposed == {render.METRICS_PORT, render.SDK_METRICS_PORT}
    assert monitor["portNames"] == ["metrics", "sdk-metrics"]


#: Source directories each image installs. The operator image carries the worker
#: runtime only because the CLI's run/status/approve verbs import its connection helpers.
IMAGE_PACKAGES = {
    "worker": {"contract", "worker", "cli"},
    "operator": {"contract", "worker", "operator", "cli"},
}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_build_stage_copies_its_packages_and_not_the_dev_sandbox(name: str) -> None:
    sources = build_stage_sources(IMAGES[name].read_text())
    assert "dev" not in sources, "the dev sandbox must stay out of production images"
    assert "." not in sources, "copy named directories, so nothing else slips in"
    package_dirs = {s for s in sources if (REPO / s).is_dir()}
    assert package_dirs == IMAGE_PACKAGES[name]
    assert {"pyproject.toml", "README.md"} <= set(sources)
    # Every copied directory is one the distribution builds packages from.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    where = set(pyproject["tool"]["setuptools"]["packages"]["find"]["where"])
    assert package_dirs <= where
    assert "dev" in where, "a checkout's `pip install -e .` still installs the sandbox"

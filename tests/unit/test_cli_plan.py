"""``steadfast plan``: the operator's plan for every example, compared with golden files.

The goldens live in ``tests/unit/golden/plan/<example>.txt``. After a change that
is meant to alter what the operator renders, regenerate them and review the diff:

    STEADFAST_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -m unit tests/unit/test_cli_plan.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from steadfast_cli import main

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOLDEN = Path(__file__).parent / "golden" / "plan"
FLAGS = ["--worker-image", "steadfast/worker:golden", "--temporal-address", "temporal:7233"]
UPDATE = os.environ.get("STEADFAST_UPDATE_GOLDEN") == "1"


def plan(file: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str, str]:
    code = main.dispatch(["plan", "-f", str(file), *flags])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_example_has_a_golden() -> None:
    assert EXAMPLES, "examples/ is empty"
    stems = {p.stem for p in EXAMPLES}
    orphans = {p.stem for p in GOLDEN.glob("*.txt")} - stems
    assert not orphans, f"goldens without an example: {sorted(orphans)}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_plan_matches_golden(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = plan(example, capsys, *FLAGS)
    assert (code, err) == (0, "")
    golden = GOLDEN / f"{example.stem}.txt"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(out)
    assert golden.exists(), f"no golden for {example.name}: run with STEADFAST_UPDATE_GOLDEN=1"
    assert out == golden.read_text(), (
        f"steadfast plan -f examples/{example.name} differs from {golden.relative_to(ROOT)}; "
        "if the change is intended, regenerate with STEADFAST_UPDATE_GOLDEN=1 and review the diff"
    )


def test_plan_documents_are_valid_yaml_children(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = plan(ROOT / "examples" / "market-watch.yaml", capsys, *FLAGS)
    assert code == 0
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert [d["kind"] for d in docs] == [
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ]
    (container,) = docs[1]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "steadfast/worker:golden"
    assert "# taskQueue: steadfast.research.market-watch" in out


def _manifest(tmp_path: Path, **spec: Any) -> Path:
    base = yaml.safe_load((ROOT / "examples" / "approval-gate.yaml").read_text())
    base["spec"].update(spec)
    file = tmp_path / "agent.yaml"
    file.write_text(yaml.safe_dump(base))
    return file


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"budget": {"maxUSDPerRun": 0.01}},
            "(BudgetBelowOneCall): ResearchAgent research/approval-gate: "
            "spec.budget.maxUSDPerRun: 0.01 USD is below one call "
            "(1000 tokens x 15.0 USD/MTok = 0.0150 USD)",
        ),
        (
            {"modle": {"name": "x"}},
            "(InvalidSpec): ResearchAgent research/approval-gate: spec.modle: unknown field",
        ),
        (
            {"workers": {"autoscaler": "hpa"}},
            "spec.workers.autoscaler: Input should be 'builtin', 'keda' or 'none'",
        ),
        (
            {"model": {"name": "claude-unpriced-9", "maxTokens": 1000}},
            "(InvalidSpec): ResearchAgent research/approval-gate: spec.model.name: "
            "no built-in price for model 'claude-unpriced-9'; set spec.model.pricing",
        ),
    ],
)
def test_a_manifest_the_operator_would_refuse(
    spec: dict[str, Any], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = plan(_manifest(tmp_path, **spec), capsys, *FLAGS)
    assert code == 1
    assert out == ""
    assert err.startswith("steadfast plan: error: the operator would refuse this manifest")
    assert message in err


def test_no_default_image_is_refused_like_the_operator_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = plan(_manifest(tmp_path), capsys, "--worker-image", "")
    assert code == 1
    assert "spec.workers.image: empty and the operator has no default image" in err


def test_not_a_research_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "cm.yaml"
    file.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    code, out, err = plan(file, capsys)
    assert (code, out) == (2, "")
    assert "not a ResearchAgent (steadfast.dev/v1alpha1) manifest" in err


@pytest.mark.parametrize("name", ["a.b", "1abc", "a" * 60])
def test_a_name_the_children_cannot_use_is_refused(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = _manifest(tmp_path)
    doc = yaml.safe_load(file.read_text())
    doc["metadata"]["name"] = name
    file.write_text(yaml.safe_dump(doc))
    code, out, err = plan(file, capsys, *FLAGS)
    assert (code, out) == (1, "")
    assert f"ResearchAgent research/{name}: metadata.name" in err

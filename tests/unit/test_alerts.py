"""Steadfast's alert rules, checked by the real promtool.

An alert that never fires (a typo in a metric name, a threshold on the wrong side)
looks exactly like a healthy system, so every alert has promtool unit tests that
show it firing on bad input and staying silent on good input. The rules have
one home, the chart's ``alerts/``, so what promtool tests is what the chart ships
(tests/unit/test_chart_shipped.py checks the rendered PrometheusRule).

promtool comes from Debian's ``prometheus`` package (``scripts/bootstrap --all``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.test_dashboards import known_metric_names, metric_names_in

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "charts" / "steadfast" / "alerts"
RULES = ALERTS / "steadfast.rules.yaml"
TESTS = sorted((ALERTS / "tests").glob("*.yaml"))

#: What issue 5 asks for, by alert name.
EXPECTED_ALERTS = {
    "SteadfastRetryStorm",
    "SteadfastRunsFailing",
    "SteadfastBudgetExhausted",
    "SteadfastDailyBudgetNearlyExhausted",
    "SteadfastDailyBudgetExhausted",
    "SteadfastBacklogAgeGrowing",
    "SteadfastWorkersUnavailable",
    "SteadfastOperatorDown",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package (scripts/bootstrap --all)",
            pytrace=False,
        )
    return found


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    proc = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    proc = subprocess.run(
        [promtool(), "test", "rules", *(str(t) for t in TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ALERTS,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(TESTS)


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    # Guards the test above: a test that expects silence where the alert fires must fail.
    broken = yaml.safe_load((ALERTS / "tests" / "workers_unavailable_test.yaml").read_text())
    broken["rule_files"] = [str(RULES)]
    for case in broken["tests"]:
        for check in case["alert_rule_test"]:
            check["exp_alerts"] = []
    path = tmp_path / "broken_test.yaml"
    path.write_text(yaml.safe_dump(broken))
    proc = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "SteadfastWorkersUnavailable" in proc.stdout + proc.stderr


def test_the_alerts_are_the_ones_promised() -> None:
    assert {rule["alert"] for rule in rules()} == EXPECTED_ALERTS


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_alert_has_severity_summary_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    # A runbook line says what to look at or run, not just what is wrong.
    assert len(annotations["runbook"]) > 40


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_alert_queries_only_known_metrics(rule: dict[str, Any]) -> None:
    used = metric_names_in(rule["expr"])
    assert used
    assert used <= known_metric_names(), used - known_metric_names()


def _checks(alert: str) -> list[dict[str, Any]]:
    found = []
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            found += [c for c in case["alert_rule_test"] if c["alertname"] == alert]
    return found


@pytest.mark.parametrize("alert", sorted(EXPECTED_ALERTS))
def test_every_alert_is_tested_firing_and_not_firing(alert: str) -> None:
    checks = _checks(alert)
    assert any(c["exp_alerts"] for c in checks), f"no promtool test shows {alert} firing"
    assert any(not c["exp_alerts"] for c in checks), f"no promtool test shows {alert} silent"

"""Alert rules and dashboard: promtool checks and unit-tests the rules, every dashboard query parses, and the
copies shipped with kustomize equal the chart's. (That every metric they read is exported is proven against a
running operator in tests/e2e/test_observability.py.)"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.support.monitoring import (
    COMPONENT,
    DASHBOARD,
    RULES,
    alert_rules,
    as_promql,
    dashboard_queries,
    metric_names,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = os.environ.get("PAIFLOW_PROMTOOL", "")
    if not Path(path).is_file():
        pytest.fail(f"promtool not built ({path or 'PAIFLOW_PROMTOOL unset'}): run `make tools-bin`", pytrace=False)
    return path


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", "tests/monitoring/alerts.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load((REPO / "tests" / "monitoring" / "alerts.test.yaml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert tested == {rule["alert"] for rule in alert_rules()}


def test_promtool_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """The same tests against rules whose threshold moved: promtool reports the difference."""
    rules = tmp_path / "alerts.rules.yaml"
    rules.write_text(RULES.read_text().replace("> 3 * max by (job)", "> 30 * max by (job)"))
    tests = tmp_path / "alerts.test.yaml"
    tests.write_text(
        (REPO / "tests" / "monitoring" / "alerts.test.yaml")
        .read_text()
        .replace("../../charts/paiflow-operator/files/alerts.rules.yaml", str(rules))
    )
    result = run(promtool, "test", "rules", str(tests))
    assert result.returncode != 0
    assert "PaiflowStatusesStale" in result.stdout + result.stderr


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15
    # promtool parses PromQL in rule files: one recording rule per query.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": as_promql(q)} for i, q in enumerate(queries)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_a_broken_query_fails_the_parse_check(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum by (le (x)"}]}]}))
    assert run(promtool, "check", "rules", str(path)).returncode != 0


def test_dashboard_covers_what_on_call_asks() -> None:
    names = metric_names(dashboard_queries())
    for metric in (
        "paiflow_runs",
        "paiflow_runs_completed_total",
        "paiflow_run_duration_seconds_bucket",
        "paiflow_pai_calls_total",
        "paiflow_pai_call_duration_seconds_bucket",
        "paiflow_oldest_status_age_seconds",
        "paiflow_kube_writes_total",
    ):
        assert metric in names, metric


def test_kustomize_prometheusrule_equals_the_chart_rules() -> None:
    rule = yaml.safe_load((COMPONENT / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_kustomize_dashboard_equals_the_chart_dashboard() -> None:
    assert json.loads((COMPONENT / "grafana-dashboard.json").read_text()) == json.loads(DASHBOARD.read_text())

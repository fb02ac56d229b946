"""The PromQL the project ships (alert rules, dashboard) and the metric names it reads, for the monitoring tests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_FILES = REPO / "charts" / "paiflow-operator" / "files"
RULES = CHART_FILES / "alerts.rules.yaml"
DASHBOARD = CHART_FILES / "grafana-dashboard.json"
COMPONENT = REPO / "deploy" / "components" / "monitoring"

# Grafana's variables, replaced by values of the same kind so that the queries parse as PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1d", "$__interval": "1m", "$namespace": ".*"}
METRIC = re.compile(r"\b(paiflow_[a-z0-9_]+|up)\b(?!\s*\()")


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") == "query":
            # label_values(METRIC{...}, label) is Grafana's, not PromQL: its selector is.
            match = re.fullmatch(r"label_values\((.*), *\w+\)", variable["definition"])
            assert match, variable["definition"]
            queries.append(match.group(1))
    return queries


def as_promql(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


def metric_names(queries: list[str]) -> set[str]:
    return {name for query in queries for name in METRIC.findall(query)}


def shipped_queries() -> list[str]:
    return [rule["expr"] for rule in alert_rules()] + [as_promql(q) for q in dashboard_queries()]

"""The completion counter and duration histogram: by namespace and final status, bounded, pre-initialised."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from paiflow_operator import metrics
from paiflow_operator.pai.models import TERMINAL_STATUSES


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_ended_statuses_are_pais_terminal_ones() -> None:
    assert {"Succeeded", "Failed", "Terminated", "Skipped"} == metrics.ENDED == {str(s) for s in TERMINAL_STATUSES}


def test_a_namespace_seen_has_its_completion_series_at_zero() -> None:
    metrics.namespace_seen("unit-seen")
    for status in metrics.ENDED:
        assert value("paiflow_runs_completed_total", namespace="unit-seen", status=status) == 0.0
    metrics.namespace_seen("unit-seen")  # idempotent: nothing reset
    metrics.observe_completion("unit-seen", "Failed", 12.0)
    metrics.namespace_seen("unit-seen")
    assert value("paiflow_runs_completed_total", namespace="unit-seen", status="Failed") == 1.0


def test_completion_counts_and_observes_duration() -> None:
    metrics.observe_completion("unit-ns", "Succeeded", 90.0)
    metrics.observe_completion("unit-ns", "Succeeded", 4000.0)
    assert value("paiflow_runs_completed_total", namespace="unit-ns", status="Succeeded") == 2.0
    assert value("paiflow_run_duration_seconds_count", namespace="unit-ns", status="Succeeded") == 2.0
    assert value("paiflow_run_duration_seconds_sum", namespace="unit-ns", status="Succeeded") == 4090.0
    assert value("paiflow_run_duration_seconds_bucket", namespace="unit-ns", status="Succeeded", le="120.0") == 1.0


def test_a_run_without_a_duration_is_counted_but_not_observed() -> None:
    metrics.observe_completion("unit-nodur", "Skipped", None)
    assert value("paiflow_runs_completed_total", namespace="unit-nodur", status="Skipped") == 1.0
    assert value("paiflow_run_duration_seconds_count", namespace="unit-nodur", status="Skipped") is None


def test_metrics_carry_no_per_run_label() -> None:
    text = generate_latest(REGISTRY).decode()
    for line in text.splitlines():
        if line.startswith(("paiflow_runs_completed", "paiflow_run_duration")):
            labels = line.split("{", 1)[1].split("}", 1)[0]
            names = {pair.split("=", 1)[0] for pair in labels.split(",")}
            assert names <= {"namespace", "status", "le"}, line

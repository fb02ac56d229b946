"""Prometheus metrics. Gauges over all tracked runs are computed at scrape time, not kept up to date."""

from __future__ import annotations

import time
from collections import Counter as TallyCounter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from paiflow_operator.pai.models import TERMINAL_STATUSES

# Final statuses as written to status.runStatus: a change to one of these is a completion.
ENDED = frozenset(str(status) for status in TERMINAL_STATUSES)

PAI_CALLS = Counter(
    "paiflow_pai_calls_total",
    "PAI API calls by action and outcome (ok or the error kind).",
    ["action", "outcome"],
)
PAI_LATENCY = Histogram(
    "paiflow_pai_call_duration_seconds",
    "PAI API call latency.",
    ["action"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SYNC_ERRORS = Counter("paiflow_sync_errors_total", "Failed syncs by reason.", ["reason"])
KUBE_WRITES = Counter("paiflow_kube_writes_total", "Kubernetes writes by kind.", ["kind"])
MEMBERS = Gauge(
    "paiflow_members",
    "Replicas the runs are shared among, as this replica sees them (itself included; 0: not a member).",
)
MEMBER = Gauge("paiflow_member", "1 while this replica holds a live Lease and owns runs, else 0.")
HANDOVERS = Counter(
    "paiflow_handovers_total",
    "Runs handed over when the members changed: taken from other replicas, or released to them.",
    ["direction"],
)
PAI_CIRCUIT_OPEN = Gauge(
    "paiflow_pai_circuit_open",
    "1 while calls to PAI Flow in a region are held after failures in a row (one call probes), else 0.",
    ["region"],
)
# As Tekton's pipelinerun_total / pipelinerun_duration_seconds: by namespace and final status, never by run
# (bounded cardinality: namespaces x 4 terminal statuses). Counted once, when the operator writes the end.
RUNS_COMPLETED = Counter(
    "paiflow_runs_completed_total",
    "PAI runs seen ending (status written as Succeeded, Failed, Terminated or Skipped), by namespace and status.",
    ["namespace", "status"],
)
# Completion CloudEvents (runs/notify.py): delivered (2xx), retried (not acknowledged), dropped (queue full).
NOTIFICATIONS = Counter(
    "paiflow_notifications_total", "Completion CloudEvents by outcome: delivered, retried, dropped.", ["outcome"]
)
NOTIFICATIONS_PENDING = Gauge("paiflow_notifications_pending", "Completion CloudEvents waiting to be delivered.")
RUN_DURATION = Histogram(
    "paiflow_run_duration_seconds",
    "Duration of ended PAI runs as PAI reports it, by namespace and final status.",
    ["namespace", "status"],
    buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800),
)


def observe_pai_call(action: str, outcome: str, seconds: float) -> None:
    PAI_CALLS.labels(action, outcome).inc()
    PAI_LATENCY.labels(action).observe(seconds)


# Alerts compare status ages with it (PaiflowStatusesStale): "stale" is a multiple of the configured interval.
DEFAULT_POLL_INTERVAL = Gauge(
    "paiflow_default_poll_interval_seconds", "The default poll interval (PAIFLOW_DEFAULT_POLL_INTERVAL)."
)
_namespaces_seen: set[str] = set()


def namespace_seen(namespace: str) -> None:
    """Creates the completion series of a namespace at 0 when its first run is seen.

    Prometheus' increase() cannot count a series' first sample: without this, the first failure in a
    namespace (the counter born at 1) would never raise the failed-runs alert.
    """
    if namespace in _namespaces_seen:
        return
    _namespaces_seen.add(namespace)
    for status in sorted(ENDED):
        RUNS_COMPLETED.labels(namespace, status)


def observe_completion(namespace: str, run_status: str, duration_seconds: float | None) -> None:
    """One run ended (its terminal status was just written). PAI may not report a duration: count it anyway."""
    RUNS_COMPLETED.labels(namespace, run_status).inc()
    if duration_seconds is not None and duration_seconds >= 0:
        RUN_DURATION.labels(namespace, run_status).observe(duration_seconds)


@dataclass(frozen=True)
class RunSnapshot:
    run_status: str | None
    active: bool
    last_ok_monotonic: float | None
    tracked_since_monotonic: float


class RunsCollector(Collector):
    def __init__(self, snapshot: Callable[[], Iterable[RunSnapshot]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        by_status: TallyCounter[str] = TallyCounter()
        oldest = 0.0
        tracked = 0
        for run in self._snapshot():
            tracked += 1
            by_status[run.run_status or "Pending"] += 1
            if run.active:
                since = run.last_ok_monotonic if run.last_ok_monotonic is not None else run.tracked_since_monotonic
                oldest = max(oldest, now - since)
        runs = GaugeMetricFamily("paiflow_runs", "Tracked PaiPipelineRuns by PAI status.", labels=["status"])
        for status, count in sorted(by_status.items()):
            runs.add_metric([status], count)
        yield runs
        yield GaugeMetricFamily("paiflow_tracked_resources", "PaiPipelineRuns this replica owns.", value=tracked)
        yield GaugeMetricFamily(
            "paiflow_oldest_status_age_seconds",
            "Seconds since the least recently confirmed active run was last read from PAI.",
            value=oldest,
        )


def register_runs_collector(
    snapshot: Callable[[], Iterable[RunSnapshot]], registry: CollectorRegistry = REGISTRY
) -> RunsCollector:
    collector = RunsCollector(snapshot)
    registry.register(collector)
    return collector

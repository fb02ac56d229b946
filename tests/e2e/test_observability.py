"""What on-call sees, from the operator process itself: completion and duration metrics by namespace and final
status, every metric the alert rules and the dashboard read present on /metrics, and a `kubectl wait` for
"ended, either way" that a paused (Suspended) run does not satisfy."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable

import pytest
from tests.e2e.conftest import Runs, wait_for
from tests.support.monitoring import alert_rules, dashboard_queries, metric_names
from tests.support.operator_process import REPO, OperatorProcess

from paiflow_emulator.server import Emulator
from paiflow_emulator.timeline import Timeline

pytestmark = pytest.mark.cluster

RunIds = Callable[[], str]
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)", re.MULTILINE)


def samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of `name` whose labels include all of `labels`."""
    out = []
    for match in SAMPLE.finditer(text):
        if match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            out.append(float(match.group(3)))
    return out


def test_completions_and_durations_by_namespace_and_status(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: RunIds
) -> None:
    ns = runs.namespace
    ok, bad = run_id(), run_id()
    emulator.add_run(Timeline.of(("Running", 3), ("Succeeded", None)), run_id=ok)
    emulator.add_run(Timeline.of(("Running", 2), ("Failed", None, "OOMKilled")), run_id=bad)
    runs.apply("ok", ok)
    runs.apply("bad", bad)
    runs.wait_status("ok", "Succeeded", timeout=40)
    runs.wait_status("bad", "Failed", timeout=40)
    duration = runs.status("ok")["duration"]

    def counted() -> str | None:
        text = operator.metrics()
        done = samples(text, "paiflow_runs_completed_total", namespace=ns, status="Succeeded") == [1.0]
        return (
            text
            if done and samples(text, "paiflow_runs_completed_total", namespace=ns, status="Failed") == [1.0]
            else None
        )

    try:
        text = wait_for(counted, 20, what="completions counted")
    except AssertionError as exc:
        lines = [line for line in operator.metrics().splitlines() if "paiflow_run" in line and ns in line]
        raise AssertionError(f"{exc}\n" + "\n".join(lines)) from None
    # Pre-initialised at 0 for the namespace: the first Terminated/Skipped run there is an increase too.
    assert samples(text, "paiflow_runs_completed_total", namespace=ns, status="Terminated") == [0.0]
    assert samples(text, "paiflow_runs_completed_total", namespace=ns, status="Skipped") == [0.0]
    assert samples(text, "paiflow_run_duration_seconds_count", namespace=ns, status="Succeeded") == [1.0]
    assert samples(text, "paiflow_run_duration_seconds_sum", namespace=ns, status="Succeeded") == [float(duration)]
    assert samples(text, "paiflow_run_duration_seconds_bucket", namespace=ns, status="Succeeded", le="30.0") == [1.0]
    # No per-run label anywhere: cardinality is bounded by namespaces x statuses.
    assert ok not in text and "pipelineRunId" not in text and 'name="ok"' not in text

    # Counted once: later polls, watch events and a spec change of the ended run add nothing.
    runs.cp.kubectl("annotate", "ppr", "ok", "-n", ns, "touched=yes")
    runs.apply("ok", ok, pollInterval="6s")
    time.sleep(3)
    text = operator.metrics()
    assert samples(text, "paiflow_runs_completed_total", namespace=ns, status="Succeeded") == [1.0]
    assert samples(text, "paiflow_run_duration_seconds_count", namespace=ns, status="Succeeded") == [1.0]


def test_every_metric_in_the_alerts_and_dashboard_is_exported(operator: OperatorProcess) -> None:
    text = operator.metrics()
    described = set(re.findall(r"^# HELP (\S+)", text, re.MULTILINE))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)", text, re.MULTILINE))
    present = described | {m.group(1) for m in SAMPLE.finditer(text)}
    wanted = metric_names([rule["expr"] for rule in alert_rules()] + dashboard_queries())
    # `up` is Prometheus' own, per scraped target.
    wanted.discard("up")
    assert len(wanted) >= 10, wanted
    missing = []
    for name in sorted(wanted):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in present or (base != name and types.get(base) == "histogram"):
            continue
        missing.append(name)
    assert not missing, f"read by the alerts or dashboard but not exported: {missing}"


def test_ended_either_way_wait_from_the_readme_outlasts_a_pause(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: RunIds
) -> None:
    """README: the `until kubectl wait ...` loop returns once the run has ended, not while PAI has it Suspended.

    (`--for=condition=Reconciling=False`, which the README used to give for this, returns during the pause.)
    """
    readme = (REPO / "README.md").read_text()
    block = re.search(r"# ended, either way.*?\n\s*(until kubectl wait .*?done)\n", readme, re.DOTALL)
    assert block, "the README's 'ended, either way' snippet is missing"
    ns = runs.namespace
    script = block.group(1).replace("ppr/nightly-train -n ml", f"ppr/paused -n {ns}").replace("sleep 10", "sleep 1")
    rid = run_id()
    emulator.add_run(Timeline.of(("Running", 2), ("Suspended", 8), ("Running", 2), ("Succeeded", None)), run_id=rid)
    runs.apply("paused", rid)
    runs.wait_status("paused", "Running", timeout=20)

    kubectl_dir = runs.cp.kubectl_path.parent
    env = {"PATH": f"{kubectl_dir}:/usr/bin:/bin", "KUBECONFIG": str(runs.cp.kubeconfig), "HOME": str(runs.cp.workdir)}
    waiter = subprocess.Popen(
        ["bash", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        runs.wait_status("paused", "Suspended", timeout=20)
        # The old advice is satisfied by the pause...
        old = runs.cp.kubectl(
            "wait", "ppr/paused", "-n", ns, "--for=condition=Reconciling=False", "--timeout=5s", check=False
        )
        assert old.returncode == 0 and runs.status("paused")["runStatus"] == "Suspended"
        # ...the README's loop is not.
        time.sleep(3)
        assert waiter.poll() is None, "the 'ended, either way' wait returned while the run was only Suspended"
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, err
    assert "condition met" in out
    assert runs.status("paused")["runStatus"] == "Succeeded"


def test_kubectl_habits_short_plural_field_selectors_and_explain(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: RunIds
) -> None:
    ns = runs.namespace
    ok, bad = run_id(), run_id()
    emulator.add_run(Timeline.of(("Succeeded", None)), run_id=ok)
    emulator.add_run(Timeline.of(("Failed", None, "OOMKilled")), run_id=bad)
    runs.apply("fine", ok)
    runs.apply("broken", bad)
    runs.wait_status("fine", "Succeeded")
    runs.wait_status("broken", "Failed")

    def names(*args: str) -> list[str]:
        out = runs.cp.kubectl("get", *args, "-n", ns, "-o", "name").stdout.split()
        return sorted(n.split("/", 1)[1] for n in out)

    assert names("pprs") == ["broken", "fine"]
    # Filtered by the API server (CRD selectableFields), not by kubectl.
    assert names("pprs", "--field-selector", "status.runStatus=Failed") == ["broken"]
    assert names("pprs", "--field-selector", "status.runStatus!=Failed") == ["fine"]
    assert names("pprs", "--field-selector", f"spec.pipelineRunId={ok}") == ["fine"]
    refused = runs.cp.kubectl("get", "pprs", "-n", ns, "--field-selector", "status.message=x", check=False)
    assert refused.returncode != 0 and "field label not supported" in refused.stderr

    explained = runs.cp.kubectl("explain", "paipipelineruns.spec").stdout
    assert "Which PAI pipeline run to follow" in explained
    assert "pipelineRunId" in explained

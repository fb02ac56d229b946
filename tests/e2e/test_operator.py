"""The operator end to end: a real API server, the shipped CRD and RBAC, kubectl, and the PAI emulator."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest
from tests.e2e.conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, SECRETS, SHARE_TOKEN, STS_TOKEN, Runs, wait_for
from tests.support.operator_process import OperatorProcess

from paiflow_emulator.server import Emulator
from paiflow_emulator.timeline import Timeline

pytestmark = pytest.mark.cluster

RunIds = Callable[[], str]


def test_run_goes_through_its_states_and_status_follows(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: RunIds
) -> None:
    rid = run_id()
    emulator.add_run(
        Timeline.of(("Initialized", 3), ("Running", 4), ("Succeeded", None)), run_id=rid, workspace_id="2001"
    )
    runs.apply("train", rid)
    seen: list[str] = []

    def reached_end() -> bool:
        status = runs.status("train").get("runStatus")
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        return status == "Succeeded"

    wait_for(reached_end, 40, interval=0.2, what="Succeeded")
    assert seen[0] in ("Initialized", "Running") and seen[-1] == "Succeeded", seen
    status = runs.status("train")
    assert status["duration"] == 4
    assert status["startedAt"] and status["finishedAt"] and status["workspaceId"] == "2001"
    assert status["observedGeneration"] == 1
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Reconciling"]["status"] == "False"
    assert conditions["Stalled"]["status"] == "False"
    reasons = [e["reason"] for e in runs.events("train")]
    assert "Succeeded" in reasons and reasons[-1] == "Succeeded", reasons

    table = runs.cp.kubectl("get", "paipipelineruns", "-n", runs.namespace).stdout
    header, row = table.splitlines()[0].split(), table.splitlines()[1].split()
    assert header[:6] == ["NAME", "RUN", "ID", "STATUS", "PROGRESS", "DURATION"]
    assert row[:4] == ["train", rid, "Succeeded", "4"]  # no progress: the test operator reads none unless asked
    # The category and short names work too.
    assert "train" in runs.cp.kubectl("get", "pai", "-n", runs.namespace).stdout
    assert "train" in runs.cp.kubectl("get", "ppr", "-n", runs.namespace).stdout
    described = runs.cp.kubectl("describe", "ppr", "train", "-n", runs.namespace).stdout
    assert f"PAI run {rid} is Succeeded" in described


def test_failed_run_reports_pai_message_and_kubectl_wait_gates(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: RunIds
) -> None:
    good, bad = run_id(), run_id()
    emulator.add_run(Timeline.of(("Running", 2), ("Succeeded", None)), run_id=good)
    emulator.add_run(Timeline.of(("Running", 2), ("Failed", None, "node train: OOMKilled")), run_id=bad)
    runs.apply("good", good)
    runs.apply("bad", bad)
    ns = runs.namespace
    ok = runs.cp.kubectl("wait", "ppr/good", "-n", ns, "--for=condition=Succeeded", "--timeout=40s")
    assert "condition met" in ok.stdout
    runs.wait_status("bad", "Failed")
    refused = runs.cp.kubectl("wait", "ppr/bad", "-n", ns, "--for=condition=Succeeded", "--timeout=3s", check=False)
    assert refused.returncode != 0
    failed = runs.cp.kubectl("wait", "ppr/bad", "-n", ns, "--for=condition=Succeeded=False", "--timeout=5s")
    assert "condition met" in failed.stdout
    status = runs.status("bad")
    assert status["message"] == "node train: OOMKilled"
    stalled = runs.condition("bad", "Stalled")
    assert stalled and stalled["status"] == "True" and stalled["reason"] == "Failed"
    warning = [e for e in runs.events("bad") if e["reason"] == "Failed"]
    assert warning and warning[0]["type"] == "Warning" and "OOMKilled" in warning[0]["message"]
    wide = runs.cp.kubectl("get", "ppr", "bad", "-n", ns, "-o", "wide").stdout
    assert "OOMKilled" in wide and "FINISHED" in wide


def test_finished_run_costs_no_more_pai_calls_and_unchanged_polls_write_nothing(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: RunIds
) -> None:
    done, running = run_id(), run_id()
    emulator.add_run(Timeline.of(("Succeeded", None)), run_id=done)
    emulator.add_run(Timeline.of(("Running", None)), run_id=running)
    runs.apply("done", done)
    runs.apply("long", running)
    runs.wait_status("done", "Succeeded")
    runs.wait_status("long", "Running")
    time.sleep(1.5)  # let the first write's echo settle
    calls_done = emulator.counters.calls_for(done)
    calls_running = emulator.counters.calls_for(running)
    version = runs.get("long")["metadata"]["resourceVersion"]
    time.sleep(5)  # five poll intervals
    assert emulator.counters.calls_for(done) == calls_done, "a finished run was polled again"
    assert emulator.counters.calls_for(running) >= calls_running + 3, "the running run stopped being polled"
    assert runs.get("long")["metadata"]["resourceVersion"] == version, "an unchanged poll wrote to Kubernetes"


def test_spec_change_earns_a_finished_run_one_more_look(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: RunIds
) -> None:
    rid = run_id()
    emulator.add_run(Timeline.of(("Succeeded", None)), run_id=rid, manifest_size=4096)
    runs.apply("verbose", rid)
    runs.wait_status("verbose", "Succeeded")
    assert "manifest" not in runs.status("verbose")
    before = emulator.counters.calls_for(rid)
    runs.apply("verbose", rid, verbose=True, manifestType="Runtime")
    wait_for(lambda: runs.status("verbose").get("manifest"), 20, what="manifest after spec change")
    status = runs.status("verbose")
    assert status["observedGeneration"] == 2
    time.sleep(3)
    assert emulator.counters.calls_for(rid) == before + 1


def test_throttling_and_server_errors_keep_last_status_and_recover(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: RunIds
) -> None:
    rid = run_id()
    emulator.add_run(Timeline.of(("Running", None)), run_id=rid)
    runs.apply("storm", rid)
    runs.wait_status("storm", "Running")
    emulator.add_fault("throttle", run_id=rid, duration=4)
    ready = runs.wait_condition("storm", "Ready", "False", "Throttled")
    assert "Throttling" in ready["message"]
    assert runs.status("storm")["runStatus"] == "Running", "the last good status was lost"
    runs.wait_condition("storm", "Ready", "True", timeout=30)
    emulator.add_fault("unavailable", run_id=rid, duration=4)
    runs.wait_condition("storm", "Ready", "False", "ServerError")
    assert runs.status("storm")["runStatus"] == "Running"
    runs.wait_condition("storm", "Ready", "True", timeout=30)
    reasons = [e["reason"] for e in runs.events("storm")]
    assert reasons.count("Throttled") == 1 and reasons.count("ServerError") == 1, reasons
    assert reasons.count("Recovered") == 2, reasons


def test_run_not_found_is_reported(operator: OperatorProcess, runs: Runs, run_id: RunIds) -> None:
    runs.apply("ghost", run_id())
    cond = runs.wait_condition("ghost", "Ready", "False", "RunNotFound")
    assert cond["message"]
    stalled = runs.wait_condition("ghost", "Stalled", "True", "RunNotFound")
    assert stalled


def _secret(runs: Runs, name: str, data: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": runs.namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body))


def _allow_secret_reads(runs: Runs) -> None:
    runs.cp.kubectl(
        "create", "rolebinding", "paiflow-operator-secret-reader", "-n", runs.namespace,
        "--clusterrole=paiflow-operator-secret-reader", "--serviceaccount=paiflow-system:paiflow-operator",
    )  # fmt: skip


def test_credentials_from_the_runs_namespace(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: RunIds
) -> None:
    rid, shared = run_id(), run_id()
    emulator.add_run(Timeline.of(("Running", None)), run_id=rid)
    emulator.add_run(Timeline.of(("Running", None)), run_id=shared, share_token=SHARE_TOKEN)
    ref = {"credentialsSecretRef": {"name": "pai-keys"}}
    # Without the namespace's opt-in RoleBinding the operator may not read its Secrets at all.
    runs.apply("keyed", rid, **ref)
    runs.wait_condition("keyed", "Ready", "False", "SecretForbidden")
    _allow_secret_reads(runs)
    runs.wait_condition("keyed", "Ready", "False", "SecretNotFound")
    _secret(runs, "pai-keys", {"accessKeyId": ACCESS_KEY_ID, "accessKeySecret": "wrong-secret"})
    cond = runs.wait_condition("keyed", "Ready", "False", "AuthenticationFailed")
    assert "SignatureDoesNotMatch" in cond["message"] or "InvalidAccessKey" in cond["message"]
    _secret(
        runs,
        "pai-keys",
        {"accessKeyId": ACCESS_KEY_ID, "accessKeySecret": ACCESS_KEY_SECRET, "securityToken": STS_TOKEN},
    )
    runs.wait_status("keyed", "Running")
    runs.wait_condition("keyed", "Ready", "True")
    # A shared run read with its TokenId from a Secret.
    _secret(runs, "share", {"token": SHARE_TOKEN})
    runs.apply("shared", shared, tokenSecretRef={"name": "share", "key": "token"})
    runs.wait_status("shared", "Running")


def test_no_secret_ever_reaches_logs_events_or_status(operator: OperatorProcess, runs: Runs) -> None:
    # Runs after the credential tests in this module (file order), which exercised every secret.
    text = operator.log_text()
    assert text, "no operator output captured"
    events = runs.cp.kubectl("get", "events", "-A", "-o", "json").stdout
    objects = runs.cp.kubectl("get", "ppr", "-A", "-o", "json").stdout
    for secret in SECRETS:
        assert secret not in text
        assert secret not in events
        assert secret not in objects


def test_deleting_stops_polling_and_suspend_pauses_it(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: RunIds
) -> None:
    gone, paused = run_id(), run_id()
    emulator.add_run(Timeline.of(("Running", None)), run_id=gone)
    emulator.add_run(Timeline.of(("Running", None)), run_id=paused)
    runs.apply("gone", gone)
    runs.apply("paused", paused)
    runs.wait_status("gone", "Running")
    runs.wait_status("paused", "Running")
    runs.cp.kubectl("delete", "ppr", "gone", "-n", runs.namespace, "--timeout=10s")  # no finalizer to wait on
    runs.apply("paused", paused, suspend=True)
    runs.wait_condition("paused", "Ready", "True", "Suspended")
    time.sleep(1.5)
    after_delete = emulator.counters.calls_for(gone)
    after_suspend = emulator.counters.calls_for(paused)
    time.sleep(4)
    assert emulator.counters.calls_for(gone) == after_delete
    assert emulator.counters.calls_for(paused) == after_suspend
    assert emulator.get_run(gone) is not None and not emulator.get_run(gone).deleted  # type: ignore[union-attr]
    runs.apply("paused", paused, suspend=False)
    runs.wait_condition("paused", "Ready", "True", "Synced")


def test_restart_with_finished_runs_makes_no_pai_calls(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, run_id: RunIds
) -> None:
    ids = [run_id() for _ in range(3)]
    for i, rid in enumerate(ids):
        emulator.add_run(Timeline.of(("Succeeded", None)), run_id=rid)
        runs.apply(f"fin-{i}", rid)
    for i in range(3):
        runs.wait_status(f"fin-{i}", "Succeeded")
    second = OperatorProcess(
        operator.kubeconfig, operator.endpoint, operator.log_path.with_name("second.log"), operator.extra_env
    )
    before = sum(emulator.counters.calls_for(r) for r in ids)
    operator.stop()
    try:
        with second:
            time.sleep(4)
            assert sum(emulator.counters.calls_for(r) for r in ids) == before
    finally:
        operator.start()


def test_metrics_and_health(operator: OperatorProcess) -> None:
    text = operator.metrics()
    for name in (
        "paiflow_runs",
        "paiflow_pai_calls_total",
        "paiflow_pai_call_duration_seconds",
        "paiflow_oldest_status_age_seconds",
        "paiflow_tracked_resources",
    ):
        assert name in text, name
    assert operator.healthy()


def test_sigterm_stops_cleanly(operator: OperatorProcess) -> None:
    code = operator.stop()
    try:
        assert code == 0, operator.log_tail()
        assert "paiflow-operator stopped" in operator.log_text()
    finally:
        operator.start()


def test_operator_identity_is_refused_what_it_does_not_need(
    installed: object, operator_kubeconfig: object, namespace: str
) -> None:
    from tests.support.controlplane import ControlPlane

    assert isinstance(installed, ControlPlane)

    def can(*args: str) -> str:
        out = installed.kubectl("auth", "can-i", *args, kubeconfig=operator_kubeconfig, check=False)  # type: ignore[arg-type]
        return out.stdout.strip()

    assert can("list", "paipipelineruns.paiflow-operator.dev", "-A") == "yes"
    assert can("patch", "paipipelineruns.paiflow-operator.dev", "--subresource=status", "-n", namespace) == "yes"
    assert can("create", "events", "-n", namespace) == "yes"
    assert can("get", "secrets", "-n", namespace) == "no"
    # A PaiWorkspace imports runs (create) and removes them after ttlAfterFinished (delete).
    assert can("create", "paipipelineruns.paiflow-operator.dev", "-n", namespace) == "yes"
    assert can("delete", "paipipelineruns.paiflow-operator.dev", "-n", namespace) == "yes"
    # patch: only for the finalizer of launched runs with deletionPolicy Terminate (launcher.py).
    assert can("patch", "paipipelineruns.paiflow-operator.dev", "-n", namespace) == "yes"
    assert can("get", "configmaps", "-n", namespace) == "no"  # opt-in per namespace, for manifestFrom
    assert can("update", "paipipelineruns.paiflow-operator.dev", "-n", namespace) == "no"
    assert can("list", "paiworkspaces.paiflow-operator.dev", "-A") == "yes"
    assert can("patch", "paiworkspaces.paiflow-operator.dev", "--subresource=status", "-n", namespace) == "yes"
    assert can("patch", "paiworkspaces.paiflow-operator.dev", "-n", namespace) == "no"
    assert can("delete", "paiworkspaces.paiflow-operator.dev", "-n", namespace) == "no"
    assert can("watch", "paipipelineschedules.paiflow-operator.dev", "-A") == "yes"
    assert can("patch", "paipipelineschedules.paiflow-operator.dev", "--subresource=status", "-n", namespace) == "yes"
    assert can("patch", "paipipelineschedules.paiflow-operator.dev", "-n", namespace) == "no"
    assert can("delete", "paipipelineschedules.paiflow-operator.dev", "-n", namespace) == "no"
    denied = installed.kubectl("get", "secrets", "-n", "kube-system", kubeconfig=operator_kubeconfig, check=False)  # type: ignore[arg-type]
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

"""Launched runs end to end: the operator (as its shipped ServiceAccount) starts a PAI run once, follows it,
terminates it, and honours the deletion policy; the API server refuses invalid launch specs."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from typing import Any

import pytest
import yaml
from tests.e2e.conftest import Runs, wait_for
from tests.support.operator_process import REPO, OperatorProcess

from paiflow_emulator.server import Emulator
from paiflow_emulator.timeline import Timeline

pytestmark = pytest.mark.cluster

WORKSPACE = "3001"
FINALIZER = "paiflow-operator.dev/terminate-run"


def pipeline(emulator: Emulator, timeline: Timeline | None = None) -> str:
    emulator.add_workspace(WORKSPACE)
    return emulator.add_pipeline(
        f"pipeline-{uuid.uuid4().hex[:12]}", workspace_id=WORKSPACE, manifest="apiVersion: core/v1", timeline=timeline
    ).pipeline_id


def launch(runs: Runs, name: str, launch_spec: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiPipelineRun",
        "metadata": {"name": name, "namespace": runs.namespace},
        "spec": {"launch": {"workspaceId": WORKSPACE, **launch_spec}, **spec},
    }
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body))
    return runs.get(name)


def runs_in_pai(emulator: Emulator, runs: Runs, name: str) -> list[Any]:
    uid = runs.get(name)["metadata"]["uid"]
    return [r for r in emulator.run_ids() if emulator.get_run(r).name.endswith(uid)]  # type: ignore[union-attr]


def creates(emulator: Emulator) -> int:
    return sum(emulator.counters.snapshot(include_runs=False).by_action.get("CreatePipelineRun", {}).values())


def terminations(emulator: Emulator) -> int:
    return sum(emulator.counters.snapshot(include_runs=False).by_action.get("TerminatePipelineRun", {}).values())


def test_launch_creates_one_run_and_follows_it_to_succeeded(
    operator: OperatorProcess, emulator: Emulator, runs: Runs
) -> None:
    pid = pipeline(emulator, Timeline.of(("Initialized", 1), ("Running", 3), ("Succeeded", None)))
    before = creates(emulator)
    arguments = {"arguments": {"parameters": [{"name": "epochs", "value": 3}, {"name": "lr", "value": 0.01}]}}
    launch(runs, "train", {"pipelineId": pid, "arguments": arguments, "name": "resnet"})
    ns = runs.namespace
    waited = runs.cp.kubectl("wait", "ppr/train", "-n", ns, "--for=condition=Succeeded", "--timeout=60s")
    assert "condition met" in waited.stdout
    status = runs.status("train")
    (run_id,) = runs_in_pai(emulator, runs, "train")
    assert status["pipelineRunId"] == run_id
    assert status["launch"]["phase"] == "Started" and status["launch"]["attempts"] == 1
    assert status["launch"]["runName"] == f"resnet-{runs.get('train')['metadata']['uid']}"
    assert creates(emulator) == before + 1
    run = emulator.get_run(run_id)
    assert run is not None and run.pipeline_id == pid and run.workspace_id == WORKSPACE
    assert json.loads(run.arguments) == arguments  # structured YAML in, PAI's JSON text out
    # No finalizer under the default deletionPolicy (Retain).
    assert FINALIZER not in (runs.get("train")["metadata"].get("finalizers") or [])
    reasons = [e["reason"] for e in runs.events("train")]
    # (Events within one second may come in any order.)
    assert {"Creating", "Created", "Started"} <= set(reasons) and reasons[-1] == "Succeeded", reasons
    assert run.pending_timeline is None and not run.deleted  # created unstarted, then started
    table = runs.cp.kubectl("get", "ppr", "train", "-n", ns).stdout
    assert run_id in table.splitlines()[1]
    time.sleep(2)
    assert creates(emulator) == before + 1 and len(runs_in_pai(emulator, runs, "train")) == 1


def test_inline_manifest_launch(operator: OperatorProcess, emulator: Emulator, runs: Runs) -> None:
    emulator.add_workspace(WORKSPACE)
    manifest = "apiVersion: core/v1\nmetadata:\n  name: inline\nspec: {}\n"
    launch(runs, "inline", {"manifest": manifest})
    runs.wait_status("inline", "Succeeded", timeout=60)
    (run_id,) = runs_in_pai(emulator, runs, "inline")
    run = emulator.get_run(run_id)
    assert run is not None and json.loads(run.manifest or "{}")["metadata"]["name"] == "inline"


def test_sigkill_while_pai_holds_the_create_answer_still_makes_one_run(
    operator: OperatorProcess, emulator: Emulator, runs: Runs
) -> None:
    pid = pipeline(emulator, Timeline.of(("Running", 3), ("Succeeded", None)))
    before = creates(emulator)
    # PAI creates the run, then never answers: the operator cannot know the run exists.
    emulator.add_fault("hold", action="CreatePipelineRun", count=1)
    operator.stop()
    first = OperatorProcess(
        operator.kubeconfig,
        operator.endpoint,
        operator.log_path.with_name("launch-first.log"),
        {**operator.extra_env, "PAIFLOW_READ_TIMEOUT": "60"},
    )
    second = OperatorProcess(
        operator.kubeconfig, operator.endpoint, operator.log_path.with_name("launch-second.log"), operator.extra_env
    )
    try:
        first.start()
        launch(runs, "crash", {"pipelineId": pid})
        wait_for(lambda: runs_in_pai(emulator, runs, "crash"), 30, 0.05, "the run to exist in PAI")
        assert first.process is not None
        os.killpg(first.process.pid, signal.SIGKILL)  # while the create's answer is still held
        first.process.wait(5)
        status = runs.status("crash")
        assert status["launch"]["phase"] == "Creating" and "pipelineRunId" not in status
        with second:
            runs.wait_status("crash", "Succeeded", timeout=60)
            (run_id,) = runs_in_pai(emulator, runs, "crash")
            status = runs.status("crash")
            assert status["pipelineRunId"] == run_id
            assert creates(emulator) == before + 1, "a second CreatePipelineRun was sent"
            assert "Adopted" in [e["reason"] for e in runs.events("crash")]
    finally:
        emulator.clear_faults()
        if first.process is not None and first.process.poll() is None:
            os.killpg(first.process.pid, signal.SIGKILL)
        operator.start()


def test_terminate_a_launched_run(operator: OperatorProcess, emulator: Emulator, runs: Runs) -> None:
    pid = pipeline(emulator, Timeline.of(("Running", None)))
    launch(runs, "stopme", {"pipelineId": pid})
    runs.wait_status("stopme", "Running", timeout=30)
    runs.cp.kubectl("patch", "ppr", "stopme", "-n", runs.namespace, "--type=merge", "-p", '{"spec":{"terminate":true}}')
    seen: list[str] = []

    def ended() -> bool:
        current = runs.status("stopme").get("runStatus")
        if current and (not seen or seen[-1] != current):
            seen.append(current)
        return current == "Terminated"

    wait_for(ended, 30, 0.1, "Terminated")
    assert "Terminating" in seen, seen
    (run_id,) = runs_in_pai(emulator, runs, "stopme")
    assert emulator.status_of(run_id) == "Terminated"
    terminations = [e for e in runs.events("stopme") if e["reason"] == "TerminationRequested"]
    assert len(terminations) == 1
    assert runs.status("stopme")["launch"]["terminationRequestedAt"]
    # Undoing it is refused by the API server.
    undo = runs.cp.kubectl(
        "patch",
        "ppr",
        "stopme",
        "-n",
        runs.namespace,
        "--type=merge",
        "-p",
        '{"spec":{"terminate":false}}',
        check=False,
    )
    assert undo.returncode != 0 and "spec.terminate cannot be undone" in undo.stderr


def test_delete_under_retain_leaves_the_run_running(operator: OperatorProcess, emulator: Emulator, runs: Runs) -> None:
    pid = pipeline(emulator, Timeline.of(("Running", None)))
    launch(runs, "keep", {"pipelineId": pid})
    runs.wait_status("keep", "Running", timeout=30)
    (run_id,) = runs_in_pai(emulator, runs, "keep")
    assert not runs.get("keep")["metadata"].get("finalizers")
    runs.cp.kubectl("delete", "ppr", "keep", "-n", runs.namespace, "--timeout=10s")
    time.sleep(2)
    assert emulator.status_of(run_id) == "Running"


def test_delete_under_terminate_stops_the_run_then_lets_go(
    operator: OperatorProcess, emulator: Emulator, runs: Runs
) -> None:
    pid = pipeline(emulator, Timeline.of(("Running", None)))
    launch(runs, "stop-on-delete", {"pipelineId": pid}, deletionPolicy="Terminate")
    runs.wait_status("stop-on-delete", "Running", timeout=30)
    assert FINALIZER in runs.get("stop-on-delete")["metadata"]["finalizers"]
    (run_id,) = runs_in_pai(emulator, runs, "stop-on-delete")
    runs.cp.kubectl("delete", "ppr", "stop-on-delete", "-n", runs.namespace, "--timeout=20s")
    assert emulator.status_of(run_id) in ("Terminating", "Terminated")


def test_finished_run_drops_its_finalizer(operator: OperatorProcess, emulator: Emulator, runs: Runs) -> None:
    pid = pipeline(emulator, Timeline.of(("Running", 1), ("Succeeded", None)))
    launch(runs, "short", {"pipelineId": pid}, deletionPolicy="Terminate")
    runs.wait_status("short", "Succeeded", timeout=30)
    wait_for(lambda: not runs.get("short")["metadata"].get("finalizers"), 15, what="the finalizer to go")


def test_pai_errors_on_create_show_as_conditions(operator: OperatorProcess, emulator: Emulator, runs: Runs) -> None:
    emulator.add_workspace(WORKSPACE)
    launch(runs, "nopipe", {"pipelineId": "pipeline-doesnotexist"})
    cond = runs.wait_condition("nopipe", "Stalled", "True", "PipelineNotFound")
    assert "pipeline-doesnotexist" in cond["message"]
    launch(runs, "nows", {"pipelineId": "pipeline-x", "workspaceId": "9999"})
    runs.wait_condition("nows", "Stalled", "True", "WorkspaceNotFound")
    pid = pipeline(emulator)
    launch(runs, "badargs", {"pipelineId": pid, "arguments": {"arguments": [1, 2]}})
    cond = runs.wait_condition("badargs", "Stalled", "True", "InvalidLaunch")
    assert "Arguments is not valid" in cond["message"]
    assert not runs_in_pai(emulator, runs, "badargs")
    # Stalled launches retry (slowly) for ever; remove them so that later tests' faults meet only their own calls.
    runs.cp.kubectl("delete", "ppr", "--all", "-n", runs.namespace, "--timeout=20s")


def test_permission_and_throttling_on_create(operator: OperatorProcess, emulator: Emulator, runs: Runs) -> None:
    pid = pipeline(emulator, Timeline.of(("Running", 1), ("Succeeded", None)))
    emulator.add_fault(
        "error", action="CreatePipelineRun", count=1, status=403, code="Forbidden.RAM", message="User not authorized"
    )
    launch(runs, "denied", {"pipelineId": pid})
    cond = runs.wait_condition("denied", "Ready", "False", "PermissionDenied")
    assert "paiflow:CreatePipelineRun" in cond["message"]
    # The slow retry (2s in tests) then succeeds: one run.
    runs.wait_status("denied", "Succeeded", timeout=40)
    assert len(runs_in_pai(emulator, runs, "denied")) == 1
    emulator.add_fault("throttle", action="CreatePipelineRun", count=2)
    emulator.add_fault("unavailable", action="CreatePipelineRun", count=1)
    before = creates(emulator)
    launch(runs, "busy", {"pipelineId": pid})
    runs.wait_status("busy", "Succeeded", timeout=60)
    assert len(runs_in_pai(emulator, runs, "busy")) == 1
    reasons = [e["reason"] for e in runs.events("busy")]
    assert "Throttled" in reasons, reasons
    assert creates(emulator) - before >= 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"pipelineRunId": "flow-abc", "launch": {"workspaceId": "1", "pipelineId": "p"}}, "set exactly one of"),
        ({}, "set exactly one of"),
        ({"launch": {"workspaceId": "1"}}, "spec.launch needs exactly one of pipelineId, manifest or manifestFrom"),
        (
            {"launch": {"workspaceId": "1", "pipelineId": "p", "manifest": "x: 1"}},
            "spec.launch needs exactly one of",
        ),
        ({"pipelineRunId": "flow-abc", "terminate": True}, "spec.terminate applies only to launched runs"),
        ({"pipelineRunId": "flow-abc", "deletionPolicy": "Terminate"}, "spec.deletionPolicy Terminate applies only"),
        ({"launch": {"workspaceId": "1", "pipelineId": "p"}, "deletionPolicy": "Delete"}, "spec.deletionPolicy"),
    ],
)
def test_invalid_launch_specs_are_refused_naming_the_field(runs: Runs, spec: dict[str, Any], message: str) -> None:
    body = {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiPipelineRun",
        "metadata": {"name": "bad", "namespace": runs.namespace},
        "spec": spec,
    }
    out = runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def test_launch_is_immutable(runs: Runs) -> None:
    base = {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiPipelineRun",
        "metadata": {"name": "fixed", "namespace": runs.namespace},
        "spec": {"launch": {"workspaceId": "1", "pipelineId": "p"}, "suspend": True},
    }
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(base))
    base["spec"]["launch"]["pipelineId"] = "q"  # type: ignore[index]
    out = runs.cp.kubectl("apply", "-f", "-", input=json.dumps(base), check=False)
    assert out.returncode != 0 and "spec.launch is immutable" in out.stderr, out.stderr
    # A merge patch, not `kubectl replace`: replace reads the resourceVersion first, and the operator's own
    # status writes in between turn the answer into a Conflict instead of the rule's message.
    switched = {"spec": {"launch": None, "suspend": None, "pipelineRunId": "flow-abc"}}
    out = runs.cp.kubectl(
        "patch", "ppr", "fixed", "-n", runs.namespace, "--type=merge", "-p", json.dumps(switched), check=False
    )
    assert out.returncode != 0 and "cannot be added to or removed" in out.stderr, out.stderr


def test_region_and_credentials_are_fixed_once_the_launch_is_claimed(runs: Runs) -> None:
    base: dict[str, Any] = {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiPipelineRun",
        "metadata": {"name": "pinned", "namespace": runs.namespace},
        "spec": {"launch": {"workspaceId": "1", "pipelineId": "p"}, "suspend": True, "regionId": "cn-hangzhou"},
    }
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(base))
    ns = runs.namespace

    def patch_spec(spec: dict[str, Any]) -> Any:
        return runs.cp.kubectl(
            "patch", "ppr", "pinned", "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}), check=False
        )

    assert patch_spec({"regionId": "cn-shanghai"}).returncode == 0  # nothing claimed yet: still free
    claimed = {"status": {"launch": {"phase": "Creating", "runName": "pinned-x", "attempts": 1}}}
    runs.cp.kubectl(
        "patch", "ppr", "pinned", "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(claimed)
    )
    out = patch_spec({"regionId": "cn-beijing"})
    assert out.returncode != 0 and "spec.regionId: Forbidden: spec.regionId cannot change once" in out.stderr, (
        out.stderr
    )
    out = patch_spec({"credentialsSecretRef": {"name": "other-keys"}})
    assert out.returncode != 0 and "spec.credentialsSecretRef cannot change once" in out.stderr, out.stderr
    assert patch_spec({"suspend": False, "terminate": True}).returncode == 0  # the rest of the spec is not pinned
    assert runs.get("pinned")["spec"]["regionId"] == "cn-shanghai"


@pytest.mark.parametrize(
    "path", ["deploy/examples/paipipelinerun-launch.yaml", "deploy/argocd/examples/train-then-serve.yaml"]
)
def test_shipped_launch_examples_are_accepted_by_the_api_server(runs: Runs, path: str) -> None:
    docs = [d for d in yaml.safe_load_all((REPO / path).read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = runs.namespace
    items = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    out = runs.cp.kubectl("create", "--dry-run=server", "-f", "-", "-o", "name", input=items)
    names = out.stdout.split()
    launched = [n for n in names if n.startswith("paipipelinerun.paiflow-operator.dev/")]
    assert len(launched) == sum(d["kind"] == "PaiPipelineRun" for d in docs) >= 1, names


def test_two_replicas_acting_on_the_same_resources_create_one_run_each(
    operator: OperatorProcess, emulator: Emulator, runs: Runs
) -> None:
    """A rolling update's overlap at its worst: two operators both believe they own every resource, see them at
    the same instant (no jitter, both resumed together) and PAI's ListPipelineRuns is slow, so that both would
    look up before either creates. The conditional intent write lets one replica through per resource."""
    pid = pipeline(emulator, Timeline.of(("Running", 2), ("Succeeded", None)))
    env = {**operator.extra_env, "PAIFLOW_INITIAL_JITTER": "0s"}
    replicas = [
        OperatorProcess(operator.kubeconfig, operator.endpoint, operator.log_path.with_name(f"replica-{i}.log"), env)
        for i in range(2)
    ]
    names = [f"twin-{i}" for i in range(6)]
    docs = [
        {
            "apiVersion": "paiflow-operator.dev/v1alpha1",
            "kind": "PaiPipelineRun",
            "metadata": {"name": name, "namespace": runs.namespace},
            "spec": {"launch": {"workspaceId": WORKSPACE, "pipelineId": pid}},
        }
        for name in names
    ]
    slow_lists = emulator.add_fault("latency", action="ListPipelineRuns", delay=1.0)
    before = creates(emulator)
    operator.stop()
    try:
        for replica in replicas:
            replica.start()
        groups = [os.getpgid(r.process.pid) for r in replicas if r.process is not None]
        for group in groups:
            os.killpg(group, signal.SIGSTOP)
        try:
            runs.cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
        finally:
            for group in groups:
                os.killpg(group, signal.SIGCONT)
        for name in names:
            runs.wait_status(name, "Succeeded", timeout=60)
        time.sleep(4)  # past the settle time: any late second create would have happened by now
        logs = [r.log_text() for r in replicas]
    finally:
        emulator.faults.remove(slow_lists.fault_id)
        for replica in replicas:
            replica.stop()
        operator.start()
    for name in names:
        found = runs_in_pai(emulator, runs, name)
        assert len(found) == 1, (name, found)
        assert runs.status(name)["pipelineRunId"] == found[0]
    assert creates(emulator) - before == len(names)
    made = [[n for n in names if f"/{n}: created PAI run" in text] for text in logs]
    lost = [[n for n in names if f"/{n}: status changed under us (409)" in text] for text in logs]
    print("created by replica:", made, "claims lost (409):", lost)
    assert sorted(made[0] + made[1]) == sorted(names)


def test_a_run_id_forged_into_status_is_never_terminated(
    operator: OperatorProcess, emulator: Emulator, runs: Runs
) -> None:
    foreign = f"flow-foreign{uuid.uuid4().hex[:10]}"
    emulator.add_run(Timeline.of(("Running", None)), run_id=foreign, name="someone-elses-run")
    launch(runs, "forged", {"pipelineId": pipeline(emulator)}, suspend=True)  # suspended: nothing launched yet
    before = terminations(emulator)
    forged = {"status": {"pipelineRunId": foreign, "launch": {"phase": "Created", "runName": "x"}}}
    runs.cp.kubectl(
        "patch", "ppr", "forged", "-n", runs.namespace, "--subresource=status", "--type=merge", "-p", json.dumps(forged)
    )
    runs.cp.kubectl(
        "patch",
        "ppr",
        "forged",
        "-n",
        runs.namespace,
        "--type=merge",
        "-p",
        '{"spec":{"suspend":false,"terminate":true}}',
    )
    cond = runs.wait_condition("forged", "Ready", "False", "TerminateRefused")
    assert "ForeignRun" in cond["message"] and foreign in cond["message"]
    time.sleep(2)
    assert emulator.status_of(foreign) == "Running"
    assert terminations(emulator) == before, "TerminatePipelineRun was sent for a run this resource did not launch"


def test_manifest_from_a_configmap_needs_the_namespace_to_opt_in(
    operator: OperatorProcess, emulator: Emulator, runs: Runs
) -> None:
    emulator.add_workspace(WORKSPACE)
    ns = runs.namespace
    manifest = "apiVersion: core/v1\nmetadata:\n  name: from-configmap\n"
    runs.cp.kubectl("create", "configmap", "pipelines", "-n", ns, f"--from-literal=train.yaml={manifest}")
    launch(runs, "cm", {"manifestFrom": {"name": "pipelines", "key": "train.yaml"}})
    cond = runs.wait_condition("cm", "Stalled", "True", "ManifestUnavailable")
    assert "403" in cond["message"] and not runs_in_pai(emulator, runs, "cm")
    binding = yaml.safe_load((REPO / "deploy" / "examples" / "configmap-reader-rolebinding.yaml").read_text())
    binding["metadata"]["namespace"] = ns
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(binding))
    runs.wait_status("cm", "Succeeded", timeout=60)  # the slow retry (2s here) now reads it
    (run_id,) = runs_in_pai(emulator, runs, "cm")
    run = emulator.get_run(run_id)
    assert run is not None and json.loads(run.manifest or "{}")["metadata"]["name"] == "from-configmap"


def test_terminate_from_the_start_creates_no_run(operator: OperatorProcess, emulator: Emulator, runs: Runs) -> None:
    before = creates(emulator)
    launch(runs, "never", {"pipelineId": pipeline(emulator)}, terminate=True)
    failed = runs.cp.kubectl(
        "wait", "ppr/never", "-n", runs.namespace, "--for=condition=Succeeded=False", "--timeout=20s"
    )
    assert "condition met" in failed.stdout
    assert runs.condition("never", "Succeeded")["reason"] == "Cancelled"  # type: ignore[index]
    assert runs.status("never")["launch"]["phase"] == "Cancelled"
    time.sleep(2)
    assert creates(emulator) == before and not runs_in_pai(emulator, runs, "never")


# ---- never two started runs, whatever PAI's list lag: SIGKILL at each step of the launch ----------------------

# Longer than a restart of the operator takes here, so that the restarted one looks while PAI still hides the run.
SETTLE = 5.0
LIST_LAG = 3 * SETTLE  # PAI lists a created run only this long after creating it
HOLD_POLICY = "paiflow-e2e-hold-launch-record"


def mine_in_pai(emulator: Emulator, uid: str) -> list[Any]:
    """Every run PAI holds for the resource with this uid, deleted ones included (by the SourceId it was given)."""
    return [r for r in (emulator.get_run(i) for i in emulator.run_ids()) if r is not None and r.source_id == uid]


def started_in_pai(emulator: Emulator, uid: str) -> list[Any]:
    # Created with NoConfirmRequired false, a run keeps a pending timeline until StartPipelineRun plays it.
    return [r for r in mine_in_pai(emulator, uid) if not r.deleted and r.pending_timeline is None]


def calls(emulator: Emulator, action: str) -> dict[str, int]:
    return dict(emulator.counters.snapshot(include_runs=False).by_action.get(action, {}))


def hold_record_policy(runs: Runs, *, on: bool) -> None:
    """A ValidatingAdmissionPolicy that refuses every status write recording a run id on objects labelled
    e2e-hold-record: the operator has the create's answer but cannot record it (the API server refuses), and is
    killed then. As if it had died between the two."""
    if not on:
        runs.cp.kubectl(
            "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", HOLD_POLICY, "--ignore-not-found"
        )
        return
    rule = {
        "apiGroups": ["paiflow-operator.dev"],
        "apiVersions": ["*"],
        "operations": ["UPDATE"],
        "resources": ["paipipelineruns/status"],
    }
    expression = (
        "!has(object.metadata.labels) || !('e2e-hold-record' in object.metadata.labels) || "
        "!has(object.status) || !has(object.status.pipelineRunId)"
    )
    docs = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": HOLD_POLICY},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [rule]},
                "validations": [{"expression": expression, "message": "e2e: recording the run id is held"}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": HOLD_POLICY},
            "spec": {"policyName": HOLD_POLICY, "validationActions": ["Deny"]},
        },
    ]
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))


def policy_holds(runs: Runs, probe: str) -> bool:
    patch = json.dumps({"status": {"pipelineRunId": "flow-probe"}})
    out = runs.cp.kubectl(
        "patch", "ppr", probe, "-n", runs.namespace, "--subresource=status", "--type=merge", "-p", patch,
        "--dry-run=server", check=False,
    )  # fmt: skip
    return out.returncode != 0 and "recording the run id is held" in out.stderr


@pytest.mark.parametrize("crash", ["during-create", "after-create", "after-record", "during-start"])
def test_sigkill_at_each_step_of_the_launch_starts_exactly_one_run(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, crash: str
) -> None:
    """The operator is SIGKILLed at one step of the launch while PAI lists a new run only 3x the settle time after
    creating it; a fresh operator finishes the launch. Every time: exactly one run started in PAI, followed to its
    end, and every other run this resource made deleted before it ever started."""
    pid = pipeline(emulator, Timeline.of(("Running", 4), ("Succeeded", None)))
    name = f"crash-{crash}"
    env = {
        **operator.extra_env,
        "PAIFLOW_LAUNCH_SETTLE_TIME": f"{SETTLE:g}s",
        "PAIFLOW_LAUNCH_ORPHAN_WINDOW": "90s",
        # One replica at a time owns everything: the restarted one acts at once, not after the dead one's Lease
        # expired (by when PAI would list the run and the lag would not matter).
        "PAIFLOW_LEASES": "false",
    }
    # The first operator waits for PAI's answers as long as it takes: it is killed while one is held.
    first = OperatorProcess(
        operator.kubeconfig, operator.endpoint, operator.log_path.with_name(f"{name}-first.log"),
        {**env, "PAIFLOW_READ_TIMEOUT": "60"},
    )  # fmt: skip
    second = OperatorProcess(operator.kubeconfig, operator.endpoint, operator.log_path.with_name(f"{name}-2.log"), env)
    starts_before = sum(calls(emulator, "StartPipelineRun").values())
    emulator.list_lag = LIST_LAG
    operator.stop()
    try:
        if crash == "during-create":
            emulator.add_fault("hold", action="CreatePipelineRun", count=1)  # PAI makes the run, the answer is lost
        elif crash == "after-record":
            emulator.add_fault("hang", action="StartPipelineRun", count=1)  # never reaches PAI
        elif crash == "during-start":
            emulator.add_fault("hold", action="StartPipelineRun", count=1)  # PAI starts it, the answer is lost
        labels = {}
        if crash == "after-create":
            labels = {"e2e-hold-record": "1"}
            hold_record_policy(runs, on=True)
            probe = {
                "apiVersion": "paiflow-operator.dev/v1alpha1",
                "kind": "PaiPipelineRun",
                "metadata": {"name": "probe", "namespace": runs.namespace, "labels": labels},
                "spec": {"launch": {"workspaceId": WORKSPACE, "pipelineId": pid}, "suspend": True},
            }
            runs.cp.kubectl("apply", "-f", "-", input=json.dumps(probe))
            wait_for(lambda: policy_holds(runs, "probe"), 30, 0.5, "the admission policy to hold records")
        first.start()
        body = {
            "apiVersion": "paiflow-operator.dev/v1alpha1",
            "kind": "PaiPipelineRun",
            "metadata": {"name": name, "namespace": runs.namespace, "labels": labels},
            "spec": {"launch": {"workspaceId": WORKSPACE, "pipelineId": pid}},
        }
        runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body))
        uid = runs.get(name)["metadata"]["uid"]

        if crash in ("during-create", "after-create"):
            wait_for(lambda: mine_in_pai(emulator, uid), 30, 0.05, "the run to exist in PAI")
            if crash == "after-create":
                wait_for(lambda: "recording the run id is held" in first.log_text(), 30, 0.05, "the refused record")
        else:
            wait_for(lambda: runs.status(name).get("pipelineRunId"), 30, 0.05, "the run id recorded")
            if crash == "during-start":
                wait_for(lambda: started_in_pai(emulator, uid), 30, 0.05, "PAI to start the run")
            else:
                time.sleep(0.5)  # the StartPipelineRun on its way, hanging
        assert first.process is not None
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(5)
        status = runs.status(name)
        if crash in ("during-create", "after-create"):
            assert status["launch"]["phase"] == "Creating" and "pipelineRunId" not in status, status
            assert len(mine_in_pai(emulator, uid)) == 1 and not started_in_pai(emulator, uid)
        else:
            assert status["launch"]["phase"] == "Recorded", status
            assert len(started_in_pai(emulator, uid)) == (1 if crash == "during-start" else 0)
        if crash == "after-create":
            hold_record_policy(runs, on=False)
            wait_for(lambda: not policy_holds(runs, "probe"), 30, 0.5, "the admission policy to go")

        with second:
            runs.wait_status(name, "Succeeded", timeout=60)
            # Whatever the first operator left unstarted is found once PAI lists it (after LIST_LAG) and deleted.
            wait_for(
                lambda: all(r.deleted for r in mine_in_pai(emulator, uid) if r.pending_timeline is not None),
                LIST_LAG * 4,
                0.25,
                "every unstarted run of this resource to be deleted",
            )
            wait_for(lambda: runs.status(name)["launch"].get("unconfirmed", 0) == 0, 30, 0.25, "no create unaccounted")
            log = second.log_text()
    finally:
        emulator.clear_faults()
        emulator.list_lag = 0.0
        hold_record_policy(runs, on=False)
        if first.process is not None and first.process.poll() is None:
            os.killpg(first.process.pid, signal.SIGKILL)
        operator.start()

    runs_made = mine_in_pai(emulator, uid)
    (started,) = started_in_pai(emulator, uid)
    status = runs.status(name)
    assert status["pipelineRunId"] == started.run_id and status["launch"]["phase"] == "Started"
    assert emulator.status_of(started.run_id) == "Succeeded"
    extra = [r for r in runs_made if r is not started]
    assert all(r.deleted for r in extra), [(r.run_id, r.deleted) for r in extra]
    reasons = [e["reason"] for e in runs.events(name)]
    assert reasons.count("DuplicateDeleted") == len(extra), reasons
    assert all(r.name.endswith(uid) for r in runs_made)
    starts = sum(calls(emulator, "StartPipelineRun").values()) - starts_before
    print(f"{crash}: runs made {len(runs_made)}, deleted {len(extra)}, StartPipelineRun calls {starts}")
    assert "Traceback" not in log

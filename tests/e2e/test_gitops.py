"""GitOps health, proven with the tools' own code: PaiPipelineRuns in every state are read from the real control
plane while the operator syncs them against the emulator, then `go test` in tests/gitops computes their status with
kstatus (what Flux and kubectl-based tooling use) and runs deploy/argocd's health.lua in gopher-lua (the Lua
interpreter Argo CD embeds), against the expectations below.

PAIFLOW_UPDATE_GITOPS_TESTDATA=1 also rewrites the committed testdata from these captures, noise taken out:
Argo CD's testdata/*.yaml and health_test.yaml, and tests/gitops/testdata/kstatus.yaml.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.conftest import Runs, wait_for
from tests.support.operator_process import REPO, OperatorProcess

from paiflow_emulator.server import Emulator
from paiflow_emulator.timeline import Timeline

pytestmark = pytest.mark.cluster

GITOPS_MODULE = REPO / "tests" / "gitops"
ARGO_DIR = REPO / "deploy" / "argocd" / "resource_customizations" / "paiflow-operator.dev" / "PaiPipelineRun"
KSTATUS_TESTDATA = GITOPS_MODULE / "testdata" / "kstatus.yaml"
ENV_CAPTURES = "PAIFLOW_GITOPS_CAPTURES"  # where the Go tests find the live captures and expectations.json
ENV_UPDATE = "PAIFLOW_UPDATE_GITOPS_TESTDATA"
GO_TEST_TIMEOUT = 240  # seconds; the first run on a fresh machine downloads and compiles kstatus' dependencies

# The committed testdata reads the same on every refresh: fixed namespace, times and request ids.
STABLE_NAMESPACE = "ml-team"
STABLE_TIME = "2026-01-01T00:00:00Z"
STABLE_REQUEST_ID = "00000000-0000-0000-0000-000000000000"
REQUEST_ID = re.compile(r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b")
STATUS_TIMES = ("startedAt", "finishedAt", "createdAt", "modifiedAt", "lastSyncTime")
SUSPENDED_MESSAGE = "Polling is suspended by spec.suspend; the last known status is kept"

Obj = dict[str, Any]


def conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def observed(obj: Obj) -> bool:
    return (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]


def run_status_is(value: str, **conds: str) -> Callable[[Obj], bool]:
    """The operator has written runStatus ``value`` for the current generation, with these condition statuses."""

    def check(obj: Obj) -> bool:
        found = conditions(obj)
        return (
            observed(obj)
            and (obj.get("status") or {}).get("runStatus") == value
            and all(found.get(t, {}).get("status") == s for t, s in conds.items())
        )

    return check


def condition_is(type_: str, status: str, reason: str) -> Callable[[Obj], bool]:
    def check(obj: Obj) -> bool:
        cond = conditions(obj).get(type_) or {}
        return observed(obj) and cond.get("status") == status and cond.get("reason") == reason

    return check


@dataclass
class Case:
    """One PaiPipelineRun state: how to get there, and what kstatus and Argo CD must make of it."""

    name: str
    kstatus: str  # InProgress, Current or Failed
    health: str  # Argo CD: Progressing, Healthy, Degraded, Suspended or Unknown
    message: str  # Argo CD's message, exactly; {namespace} and {requestId} are placeholders
    timeline: Timeline | None = None  # the PAI run in the emulator; None: PAI has no such run
    spec: Obj = field(default_factory=dict)
    ready: Callable[[Obj], bool] | None = None  # when to capture; None: captured by hand
    fault: str | None = None  # an emulator fault on this run for the whole test
    # PAI's workspace: the operator batches status queries per workspace, and a fault on one run id fails the batch.
    workspace: str = "2001"
    # A launched run (spec.launch): the pipeline it names, and the timeline runs created from it play.
    launch: Obj | None = None

    @property
    def run_id(self) -> str:
        return f"flow-gitops-{self.name}"


CASES = [
    Case("pending", "InProgress", "Progressing", "Waiting for the operator's first sync with PAI",
         Timeline.of(("Running", None))),
    Case("initialized", "InProgress", "Progressing", "PAI run is Initialized", Timeline.of(("Initialized", None)),
         ready=run_status_is("Initialized", Reconciling="True")),
    Case("running", "InProgress", "Progressing", "PAI run is Running", Timeline.of(("Running", None)),
         ready=run_status_is("Running", Reconciling="True")),
    Case("terminating", "InProgress", "Progressing", "PAI run is Terminating",
         Timeline.of(("Running", 1), ("Terminating", None)), ready=run_status_is("Terminating", Reconciling="True")),
    Case("throttled", "InProgress", "Progressing",
         "Not yet read from PAI; Throttled: GetPipelineRun failed: Request was denied due to user flow control. "
         "code=Throttling.User http=400",
         Timeline.of(("Running", None)), fault="throttle", ready=condition_is("Ready", "False", "Throttled")),
    Case("running-throttled", "InProgress", "Progressing",
         "PAI run is Running; Throttled: GetPipelineRun failed: Request was denied due to user flow control. "
         "code=Throttling.User http=400",
         Timeline.of(("Running", None)), ready=run_status_is("Running", Reconciling="True"), workspace="2002"),
    Case("succeeded", "Current", "Healthy", "PAI run is Succeeded", Timeline.of(("Running", 1), ("Succeeded", None)),
         ready=run_status_is("Succeeded", Stalled="False")),
    Case("failed", "Failed", "Degraded", "PAI run is Failed: node train: OOMKilled",
         Timeline.of(("Running", 1), ("Failed", None, "node train: OOMKilled")),
         ready=run_status_is("Failed", Stalled="True")),
    Case("terminated", "Failed", "Degraded", "PAI run is Terminated: stopped by user alice",
         Timeline.of(("Running", 1), ("Terminated", None, "stopped by user alice")),
         ready=run_status_is("Terminated", Stalled="True")),
    Case("skipped", "Failed", "Degraded", "PAI run is Skipped: upstream node failed",
         Timeline.of(("Initialized", 1), ("Skipped", None, "upstream node failed")),
         ready=run_status_is("Skipped", Stalled="True")),
    Case("pai-suspended", "Current", "Suspended", "PAI run is Suspended",
         Timeline.of(("Running", 1), ("Suspended", None)), ready=run_status_is("Suspended", Reconciling="False")),
    Case("unrecognized", "InProgress", "Progressing", "PAI run is Paused",
         Timeline.of(("Running", 1), ("Paused", None)), ready=run_status_is("Paused")),
    Case("suspended", "Current", "Suspended", f"{SUSPENDED_MESSAGE} (PAI run is Running)",
         Timeline.of(("Running", None)), ready=run_status_is("Running", Reconciling="True")),
    Case("run-not-found", "Failed", "Degraded",
         "RunNotFound: GetPipelineRun failed: The pipeline run flow-gitops-run-not-found does not exist. "
         "code=PipelineRunNotFound http=404",
         None, ready=condition_is("Stalled", "True", "RunNotFound")),
    Case("auth-failed", "Failed", "Degraded",
         "AuthenticationFailed: GetPipelineRun failed: Specified access key is not found. "
         "code=InvalidAccessKeyId.NotFound http=404",
         Timeline.of(("Running", None)), fault="bad_credentials",
         ready=condition_is("Stalled", "True", "AuthenticationFailed")),
    Case("secret-forbidden", "Failed", "Degraded",
         "SecretForbidden: the operator may not read Secret {namespace}/pai-keys: bind the ClusterRole "
         "paiflow-operator-secret-reader in namespace {namespace} code=SecretForbidden",
         Timeline.of(("Running", None)), spec={"credentialsSecretRef": {"name": "pai-keys"}},
         ready=condition_is("Stalled", "True", "SecretForbidden")),
    Case("generation-ahead", "InProgress", "Progressing", "Waiting for the operator to observe generation 2",
         Timeline.of(("Running", 1), ("Succeeded", None)), ready=run_status_is("Succeeded", Stalled="False")),
    Case("spec-change-observed", "Current", "Healthy", "PAI run is Succeeded"),
    Case("launch-succeeded", "Current", "Healthy", "PAI run is Succeeded",
         Timeline.of(("Running", 1), ("Succeeded", None)), launch={"pipelineId": "pipeline-gitops-launch"},
         ready=run_status_is("Succeeded", Stalled="False"), workspace="2003"),
    Case("launch-refused", "Failed", "Degraded",
         "PipelineNotFound: pipeline pipeline-gitops-missing: CreatePipelineRun failed: The pipeline "
         "pipeline-gitops-missing does not exist in workspace 2003. code=PipelineNotExist http=400",
         None, launch={"pipelineId": "pipeline-gitops-missing"},
         ready=condition_is("Stalled", "True", "PipelineNotFound"), workspace="2003"),
    # Made by hand once the others exist: PAI answers every CreatePipelineRun with a 503 from then on.
    Case("launch-creating", "InProgress", "Progressing",
         "Creating PAI run launch-creating-{requestId} in workspace 2003; CreateUnconfirmed: CreatePipelineRun "
         "failed: The request has failed due to a temporary failure of the server. code=ServiceUnavailable "
         "http=503; the run may or may not exist, so the operator looks it up by name before any new create",
         None, launch={"pipelineId": "pipeline-gitops-launch"}, workspace="2003"),
]  # fmt: skip
BY_NAME = {case.name: case for case in CASES}


@contextlib.contextmanager
def paused(operator: OperatorProcess) -> Iterator[None]:
    """SIGSTOP/SIGCONT the operator's process group: nothing it does can race what happens inside."""
    assert operator.process is not None and operator.process.poll() is None, "the operator is not running"
    group = os.getpgid(operator.process.pid)
    os.killpg(group, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(group, signal.SIGCONT)


def go_binary() -> str:
    found = shutil.which("go")
    if not found:
        pytest.fail("`go` is not on PATH: the GitOps health tests need Go (see tests/gitops/go.mod)", pytrace=False)
    return found


def go_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != ENV_CAPTURES}


def stable(obj: Obj, namespace: str) -> Obj:
    """The object without what changes from one capture to the next (uid, versions, times, request ids)."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    for key in ("uid", "resourceVersion", "managedFields", "creationTimestamp"):
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if not annotations:
        meta.pop("annotations", None)
    status = out.get("status") or {}
    for key in STATUS_TIMES:
        if key in status:
            status[key] = STABLE_TIME
    for cond in status.get("conditions") or []:
        cond["lastTransitionTime"] = STABLE_TIME
    if "claimedAt" in (status.get("launch") or {}):
        status["launch"]["claimedAt"] = STABLE_TIME
    text = REQUEST_ID.sub(STABLE_REQUEST_ID, json.dumps(out)).replace(namespace, STABLE_NAMESPACE)
    result: Obj = json.loads(text)
    return result


def write_committed_testdata(captured: dict[str, Obj], namespace: str) -> None:
    """Argo CD's testdata/*.yaml and health_test.yaml, and tests/gitops/testdata/kstatus.yaml, from the captures."""
    testdata = ARGO_DIR / "testdata"
    testdata.mkdir(parents=True, exist_ok=True)
    for old in testdata.glob("*.yaml"):
        old.unlink()
    health_tests, kstatus_tests = [], []
    for case in CASES:
        path = f"testdata/{case.name}.yaml"
        text = yaml.safe_dump(stable(captured[case.name], namespace), sort_keys=False, width=1000)
        (ARGO_DIR / path).write_text(text)
        message = case.message.format(namespace=STABLE_NAMESPACE, requestId=STABLE_REQUEST_ID)
        health_tests.append({"healthStatus": {"status": case.health, "message": message}, "inputPath": path})
        kstatus_tests.append({"status": case.kstatus, "inputPath": path})
    header = "# Written by PAIFLOW_UPDATE_GITOPS_TESTDATA=1 pytest tests/e2e/test_gitops.py from live captures.\n"
    (ARGO_DIR / "health_test.yaml").write_text(
        header + yaml.safe_dump({"tests": health_tests}, sort_keys=False, width=1000)
    )
    KSTATUS_TESTDATA.parent.mkdir(parents=True, exist_ok=True)
    KSTATUS_TESTDATA.write_text(
        header
        + "# kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute) of Argo CD's testdata objects; paths are\n"
        + "# relative to deploy/argocd/resource_customizations/paiflow-operator.dev/PaiPipelineRun.\n"
        + yaml.safe_dump({"tests": kstatus_tests}, sort_keys=False, width=1000)
    )


def apply_launch(runs: Runs, case: Case) -> None:
    assert case.launch is not None
    body = {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiPipelineRun",
        "metadata": {"name": case.name, "namespace": runs.namespace},
        "spec": {"launch": {"workspaceId": case.workspace, **case.launch}, **case.spec},
    }
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body))


def check_kubectl_tells_the_same_story(runs: Runs, captured: dict[str, Obj]) -> None:
    """`kubectl get -o wide` shows the PAI status, the Ready reason and PAI's message; `kubectl describe` shows the
    reason and message of the condition that makes a run Degraded in Argo CD. Settled states only: the pending
    resource and the spec change are made later."""
    table = runs.cp.kubectl("get", "ppr", "-n", runs.namespace, "-o", "wide").stdout
    print(table)
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    for case in CASES:
        if case.ready is None:
            continue
        obj, row = captured[case.name], rows[case.name]
        status = obj.get("status") or {}
        ready = conditions(obj).get("Ready")
        assert ready and ready["status"] in row and ready["reason"] in row, (case.name, row)
        if status.get("runStatus"):
            assert status["runStatus"] in row, (case.name, row)
        if status.get("message"):
            assert status["message"] in " ".join(row), (case.name, row)
        stalled = conditions(obj).get("Stalled")
        if case.health == "Degraded" and stalled:
            # A stalled sync is retried (slowly), each answer with a new request id.
            described = REQUEST_ID.sub("", runs.cp.kubectl("describe", "ppr", case.name, "-n", runs.namespace).stdout)
            message = REQUEST_ID.sub("", stalled["message"])
            assert stalled["reason"] in described and message in described, (case.name, described)


def check_kubectl_wait_recipes(runs: Runs) -> None:
    """The `kubectl wait` lines of docs/gitops.md, on settled states."""

    def wait(name: str, condition: str) -> bool:
        out = runs.cp.kubectl(
            "wait", f"ppr/{name}", "-n", runs.namespace, f"--for={condition}", "--timeout=0s", check=False
        )
        return out.returncode == 0

    assert wait("succeeded", "condition=Succeeded")
    assert not wait("failed", "condition=Succeeded")
    assert wait("failed", "condition=Succeeded=False")
    assert wait("succeeded", "jsonpath={.status.runStatus}=Succeeded")
    assert not wait("running", "jsonpath={.status.runStatus}=Succeeded")
    # Finished either way, or stuck until a human acts:
    for name in ("succeeded", "failed", "terminated", "skipped", "run-not-found", "secret-forbidden"):
        assert wait(name, "condition=Reconciling=False"), name
    for name in ("running", "initialized", "throttled"):
        assert not wait(name, "condition=Reconciling=False"), name
    for name in ("failed", "run-not-found"):
        assert wait(name, "condition=Stalled"), name
    assert not wait("succeeded", "condition=Stalled")


def test_kstatus_and_argocd_health_of_every_state(
    operator: OperatorProcess, emulator: Emulator, runs: Runs, tmp_path: Path
) -> None:
    # Compile the Go tests while the runs move; the build cache then makes the real run below quick.
    warm = subprocess.Popen(
        [go_binary(), "test", "-count=1", "-run", "^$", "./..."],
        cwd=GITOPS_MODULE,
        env=go_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ns = runs.namespace
    captured: dict[str, Obj] = {}
    ready = {case.name: case.ready for case in CASES}

    def settled(name: str) -> Obj:
        predicate = ready[name]
        assert predicate is not None

        def check() -> Obj | None:
            obj = runs.get(name)
            return obj if predicate(obj) else None

        return wait_for(check, 30, what=f"{name} to settle")

    def spec_change_observed() -> Obj | None:
        obj = runs.get("generation-ahead")
        return obj if observed(obj) and obj["status"].get("manifest") else None

    faults = []
    try:
        for case in CASES:
            if case.timeline is not None:
                emulator.add_run(
                    case.timeline,
                    run_id=case.run_id,
                    workspace_id=case.workspace,
                    name=f"train-{case.name}",
                    pipeline_id="pipeline-gitops0000000001",
                    node_id="node-gitops0000000001",
                )
            if case.fault:
                faults.append(emulator.add_fault(case.fault, run_id=case.run_id, duration=600))
            if case.launch is not None:
                if case.timeline is not None:
                    emulator.add_pipeline(
                        case.launch["pipelineId"], workspace_id=case.workspace, timeline=case.timeline
                    )
                if case.ready is not None:
                    apply_launch(runs, case)
            elif case.ready is not None:
                runs.apply(case.name, case.run_id, **case.spec)

        settled("suspended")  # suspended while it runs
        runs.apply("suspended", BY_NAME["suspended"].run_id, suspend=True)
        ready["suspended"] = condition_is("Ready", "True", "Suspended")
        settled("running-throttled")  # PAI throttles a run that was in sync
        faults.append(emulator.add_fault("throttle", run_id=BY_NAME["running-throttled"].run_id, duration=600))
        ready["running-throttled"] = condition_is("Ready", "False", "Throttled")
        for case in CASES:
            if case.ready is not None:
                captured[case.name] = settled(case.name)
        check_kubectl_tells_the_same_story(runs, captured)
        check_kubectl_wait_recipes(runs)
        # Every other launch has been captured: from now on PAI fails each create with a 503 (the slow retries of
        # launch-refused meet it too, after its capture).
        faults.append(emulator.add_fault("unavailable", action="CreatePipelineRun", duration=600))
        apply_launch(runs, BY_NAME["launch-creating"])
        ready["launch-creating"] = condition_is("Ready", "False", "CreateUnconfirmed")
        captured["launch-creating"] = settled("launch-creating")
        assert captured["launch-creating"]["status"]["launch"]["phase"] == "Creating"

        # What lasts only until the operator has seen it, a new resource and a spec change, is captured with the
        # operator stopped in its tracks.
        with paused(operator):
            runs.apply("pending", BY_NAME["pending"].run_id)
            runs.apply("generation-ahead", BY_NAME["generation-ahead"].run_id, verbose=True)
            captured["pending"] = runs.get("pending")
            captured["generation-ahead"] = runs.get("generation-ahead")
        # The CRD's default: generation 1 not yet observed, so kstatus reads InProgress before the first sync.
        assert captured["pending"].get("status") == {"observedGeneration": 0}, captured["pending"]
        ahead = captured["generation-ahead"]
        assert (ahead["metadata"]["generation"], ahead["status"]["observedGeneration"]) == (2, 1), ahead
        captured["spec-change-observed"] = wait_for(spec_change_observed, 30, what="the spec change to be observed")
    finally:
        for fault in faults:
            emulator.faults.remove(fault.fault_id)
        # Namespaces are never emptied here (no namespace controller): delete the runs, or the operator would go
        # on polling them through the rest of the session.
        runs.cp.kubectl("delete", "ppr", "--all", "-n", ns, "--wait=false", check=False)

    captures = tmp_path / "captures"
    captures.mkdir()
    expectations = []
    for case in CASES:
        (captures / f"{case.name}.json").write_text(json.dumps(captured[case.name], indent=2))
        health = {"status": case.health, "message": case.message.format(namespace=ns, requestId="{requestId}")}
        expectations.append({"name": case.name, "file": f"{case.name}.json", "kstatus": case.kstatus, "health": health})
    (captures / "expectations.json").write_text(json.dumps({"cases": expectations}, indent=2))
    if os.environ.get(ENV_UPDATE) == "1":
        write_committed_testdata(captured, ns)

    warm_out, _ = warm.communicate(timeout=GO_TEST_TIMEOUT)
    assert warm.returncode == 0, f"compiling tests/gitops failed:\n{warm_out}"
    started = time.monotonic()
    result = subprocess.run(
        [go_binary(), "test", "-count=1", "-v", "./..."],
        cwd=GITOPS_MODULE,
        env={**go_env(), ENV_CAPTURES: str(captures)},
        capture_output=True,
        text=True,
        timeout=GO_TEST_TIMEOUT,
        check=False,
    )
    output = f"go test ./... in tests/gitops ({time.monotonic() - started:.1f}s), captures in {captures}:\n"
    output += result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, output
    # Every case ran, live: a Go test that silently skipped the captures must not pass.
    for case in CASES:
        assert f"TestKstatus/live/{case.name}" in result.stdout, case.name
        assert f"TestArgoCDHealth/live/{case.name}" in result.stdout, case.name

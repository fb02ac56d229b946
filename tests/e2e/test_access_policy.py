"""PaiAccessPolicy end to end: the shipped operator (its own ServiceAccount, deploy/base RBAC) against the real
API server, PAI played by the emulator, whose counters prove which calls were (not) made and which RAM role
signed them.

Every namespace here carries the label tests/support/policies.POLICY_TEST_LABEL, so the session's
tests-allow-all policy does not select it: it starts with no policy, as a new team's namespace does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.e2e.conftest import ACCESS_KEY_ID, Runs, wait_for
from tests.support.controlplane import ControlPlane
from tests.support.policies import POLICY_TEST_LABEL

from paiflow_emulator.server import Emulator
from paiflow_emulator.timeline import Timeline

pytestmark = pytest.mark.cluster

GROUP = "paiflow-operator.dev/v1alpha1"
ROLE_A = "acs:ram::1234567890123456:role/team-a-pai"
ROLE_B = "acs:ram::1234567890123456:role/team-b-pai"
ALL_ACTIONS = ["Follow", "Import", "Launch", "Terminate", "Verbose"]


def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def tenant(installed: ControlPlane) -> Iterator[Callable[[], Runs]]:
    """Makes namespaces no policy selects yet; deletes them afterwards."""
    made: list[str] = []

    def make() -> Runs:
        name = f"tenant-{uid()}"
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {POLICY_TEST_LABEL: "1"}}}
        installed.kubectl("apply", "-f", "-", input=json.dumps(body))
        made.append(name)
        return Runs(installed, name)

    yield make
    for name in made:
        installed.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


class Policies:
    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.names: list[str] = []

    def apply(self, name: str, namespaces: list[str], workspaces: list[str], actions: list[str], **spec: Any) -> str:
        body = {
            "apiVersion": GROUP,
            "kind": "PaiAccessPolicy",
            "metadata": {"name": name},
            "spec": {
                "namespaceSelector": {
                    "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}]
                },
                "workspaceIds": workspaces,
                "actions": actions,
                **spec,
            },
        }
        self.cp.kubectl("apply", "-f", "-", input=json.dumps(body))
        if name not in self.names:
            self.names.append(name)
        return name

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.cp.kubectl("get", "paiaccesspolicy", name, "-o", "json").stdout)
        return result

    def ready(self, name: str) -> dict[str, Any] | None:
        conditions = (self.get(name).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Ready"), None)

    def delete(self, name: str) -> None:
        self.cp.kubectl("delete", "paiaccesspolicy", name, "--ignore-not-found")


@pytest.fixture
def policies(installed: ControlPlane) -> Iterator[Policies]:
    made = Policies(installed)
    yield made
    for name in made.names:
        made.delete(name)


def apply_workspace(runs: Runs, name: str, workspace_id: str, **spec: Any) -> None:
    body = {
        "apiVersion": GROUP,
        "kind": "PaiWorkspace",
        "metadata": {"name": name, "namespace": runs.namespace},
        "spec": {"workspaceId": workspace_id, **spec},
    }
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body))


def apply_launch(runs: Runs, name: str, workspace_id: str, pipeline_id: str) -> None:
    body = {
        "apiVersion": GROUP,
        "kind": "PaiPipelineRun",
        "metadata": {"name": name, "namespace": runs.namespace},
        "spec": {"launch": {"workspaceId": workspace_id, "pipelineId": pipeline_id}},
    }
    runs.cp.kubectl("apply", "-f", "-", input=json.dumps(body))


def conditions_of(runs: Runs, kind: str, name: str) -> dict[str, dict[str, Any]]:
    body = json.loads(runs.cp.kubectl("get", kind, name, "-n", runs.namespace, "-o", "json").stdout)
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}


def wait_reason(runs: Runs, kind: str, name: str, reason: str, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    def check() -> dict[str, dict[str, Any]] | None:
        found = conditions_of(runs, kind, name)
        ready = found.get("Ready")
        return found if ready and ready["status"] == "False" and ready["reason"] == reason else None

    return wait_for(check, timeout, what=f"{kind} {name} Ready=False {reason}")


def warnings(runs: Runs, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in runs.events(name) if e["type"] == "Warning" and e["reason"] == reason]


def roles_that_polled(emulator: Emulator, run_id: str) -> set[str]:
    assumed = emulator.sts.assumed()
    callers = {key for key, per_run in emulator.counters.by_caller().items() if per_run.get(run_id)}
    return {assumed[key].role_arn if key in assumed else f"key:{key}" for key in callers}


# ---- default deny ------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("operator")
def test_a_namespace_no_policy_selects_is_refused_everything_without_a_pai_call(
    tenant: Callable[[], Runs], emulator: Emulator, run_id: Callable[[], str]
) -> None:
    runs = tenant()
    ws, ws_import, ws_launch = f"ws{uid()}", f"ws{uid()}", f"ws{uid()}"
    followed, verbose, unknown_ws = run_id(), run_id(), run_id()
    for rid in (followed, verbose, unknown_ws):
        emulator.add_run(Timeline.of(("Running", None)), run_id=rid, workspace_id=ws)
    emulator.add_run(Timeline.of(("Running", None)), workspace_id=ws_import)
    emulator.add_pipeline("pipeline-policy-denied", workspace_id=ws_launch)

    runs.apply("follow", followed, workspaceId=ws)
    runs.apply("verbose", verbose, workspaceId=ws, verbose=True)
    runs.apply("no-workspace", unknown_ws)
    apply_workspace(runs, "import", ws_import)
    apply_launch(runs, "launch", ws_launch, "pipeline-policy-denied")

    for kind, name in [
        ("paipipelinerun", "follow"),
        ("paipipelinerun", "verbose"),
        ("paipipelinerun", "no-workspace"),
        ("paiworkspace", "import"),
        ("paipipelinerun", "launch"),
    ]:
        found = wait_reason(runs, kind, name, "PolicyDenied")
        assert found["Stalled"]["status"] == "True" and found["Stalled"]["reason"] == "PolicyDenied"
        message = found["Ready"]["message"]
        assert f"no PaiAccessPolicy selects namespace {runs.namespace}" in message, message
        assert "tests-allow-all" not in message  # never another policy's name
    # The slow retry (2 s here) looks again and again: still one Warning Event each, and no PAI call at all.
    time.sleep(5)
    for name in ("follow", "verbose", "no-workspace", "import", "launch"):
        assert len(warnings(runs, name, "PolicyDenied")) == 1, runs.events(name)
    for rid in (followed, verbose, unknown_ws):
        assert emulator.counters.calls_for(rid) == 0
    for workspace in (ws, ws_import, ws_launch):
        assert emulator.counters.calls_in(workspace) == 0
    assert not emulator.runs_named("launch")  # nothing created
    assert "launch" not in runs.status("launch")  # and no claim recorded: an allowed launch need not wait to settle
    # Nothing of any run reached status.
    assert "runStatus" not in runs.status("follow") and "manifest" not in runs.status("verbose")


# ---- workspaces --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("operator")
def test_a_policy_for_workspace_a_lets_the_namespace_import_a_and_not_b(
    tenant: Callable[[], Runs], policies: Policies, emulator: Emulator
) -> None:
    runs = tenant()
    ws_a, ws_b = f"wsa{uid()}", f"wsb{uid()}"
    in_a = emulator.add_run(Timeline.of(("Running", 2), ("Succeeded", None)), workspace_id=ws_a)
    emulator.add_run(Timeline.of(("Running", None)), workspace_id=ws_b)
    name = policies.apply(f"import-{uid()}", [runs.namespace], [ws_a], ["Import", "Follow"])
    apply_workspace(runs, "a", ws_a)
    apply_workspace(runs, "b", ws_b)

    imported = wait_for(
        lambda: [
            item
            for item in json.loads(
                runs.cp.kubectl(
                    "get", "ppr", "-n", runs.namespace, "-l", "paiflow-operator.dev/workspace=a", "-o", "json"
                ).stdout
            )["items"]
            if (item.get("status") or {}).get("runStatus") == "Succeeded"
        ],
        45,
        what="the run of workspace A imported and followed to Succeeded",
    )
    assert [item["spec"]["pipelineRunId"] for item in imported] == [in_a.run_id]
    found = wait_reason(runs, "paiworkspace", "b", "PolicyDenied")
    assert f"allows Import in workspace {ws_b}" in found["Ready"]["message"]
    assert emulator.counters.calls_in(ws_b) == 0
    assert not json.loads(
        runs.cp.kubectl(
            "get", "ppr", "-n", runs.namespace, "-l", "paiflow-operator.dev/workspace=b", "-o", "json"
        ).stdout
    )["items"]
    # The policy's status counts the one namespace it selects.
    status = wait_for(lambda: (s := policies.get(name).get("status") or {}).get("namespaces") == 1 and s, 20)
    assert status["conditions"][0]["reason"] == "Active"


# ---- identities --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("operator")
def test_two_namespaces_under_two_assume_role_policies_sign_as_two_roles(
    tenant: Callable[[], Runs], policies: Policies, emulator: Emulator, run_id: Callable[[], str]
) -> None:
    team_a, team_b = tenant(), tenant()
    ws = f"ws{uid()}"
    run_a, run_b = run_id(), run_id()
    for rid in (run_a, run_b):
        emulator.add_run(Timeline.of(("Running", 3), ("Succeeded", None)), run_id=rid, workspace_id=ws)
    policies.apply(
        f"a-{uid()}", [team_a.namespace], [ws], ["Follow"], identity={"type": "AssumeRole", "roleArn": ROLE_A}
    )
    policies.apply(
        f"b-{uid()}", [team_b.namespace], [ws], ["Follow"], identity={"type": "AssumeRole", "roleArn": ROLE_B}
    )
    team_a.apply("run", run_a, workspaceId=ws)
    team_b.apply("run", run_b, workspaceId=ws)
    team_a.wait_status("run", "Succeeded", timeout=45)
    team_b.wait_status("run", "Succeeded", timeout=45)
    # Same workspace, same region: still never one call for both (answers are not shared between tenants).
    assert roles_that_polled(emulator, run_a) == {ROLE_A}
    assert roles_that_polled(emulator, run_b) == {ROLE_B}
    sessions = {a.role_arn: a for a in emulator.sts.assumed().values()}
    assert sessions[ROLE_A].source_key_id == sessions[ROLE_B].source_key_id == ACCESS_KEY_ID  # from the operator's


@pytest.mark.usefixtures("operator")
def test_a_conflict_shows_on_the_resource_and_on_both_policies_and_ends_live(
    tenant: Callable[[], Runs], policies: Policies, emulator: Emulator, run_id: Callable[[], str]
) -> None:
    runs = tenant()
    ws = f"ws{uid()}"
    rid = run_id()
    emulator.add_run(Timeline.of(("Running", None)), run_id=rid, workspace_id=ws)
    first = policies.apply(
        f"c1-{uid()}", [runs.namespace], [ws], ["Follow"], identity={"type": "AssumeRole", "roleArn": ROLE_A}
    )
    second = policies.apply(f"c2-{uid()}", [runs.namespace], [ws], ["Follow"], identity={"type": "Operator"})
    runs.apply("run", rid, workspaceId=ws)
    found = wait_reason(runs, "paipipelinerun", "run", "PolicyConflict")
    assert first in found["Ready"]["message"] and second in found["Ready"]["message"]

    def conflicted(name: str) -> dict[str, Any] | None:
        ready = policies.ready(name)
        return ready if ready and ready["status"] == "False" and ready["reason"] == "PolicyConflict" else None

    for name, other in ((first, second), (second, first)):
        ready = wait_for(lambda: conflicted(name), 20, what=f"{name} Ready=False PolicyConflict")  # noqa: B023
        assert other in ready["message"]
    assert emulator.counters.calls_for(rid) == 0
    # One of them goes: the run is followed (as the remaining identity), and the survivor is Active again.
    policies.delete(second)
    runs.wait_status("run", "Running")
    assert roles_that_polled(emulator, rid) == {ROLE_A}
    wait_for(lambda: (c := policies.ready(first)) and c["status"] == "True", 20, what=f"{first} Active again")


# ---- live edits --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("operator")
def test_a_policy_edit_takes_effect_live_both_ways(
    tenant: Callable[[], Runs], policies: Policies, emulator: Emulator, run_id: Callable[[], str]
) -> None:
    runs = tenant()
    ws_allowed, ws_other = f"ws{uid()}", f"ws{uid()}"
    rid = run_id()
    emulator.add_run(Timeline.of(("Running", None)), run_id=rid, workspace_id=ws_other)
    name = policies.apply(f"live-{uid()}", [runs.namespace], [ws_allowed], ["Follow"])
    runs.apply("run", rid, workspaceId=ws_other)
    found = wait_reason(runs, "paipipelinerun", "run", "PolicyDenied")
    assert f"allows Follow in workspace {ws_other}" in found["Ready"]["message"]
    assert emulator.counters.calls_for(rid) == 0

    # Allowed now: recovers without a restart (that it need not wait for the slow retry: test_access_door.py).
    policies.apply(name, [runs.namespace], [ws_allowed, ws_other], ["Follow"])
    runs.wait_status("run", "Running", timeout=20)
    runs.wait_condition("run", "Ready", "True")

    # Denied again: the next call is refused, the last status stays.
    policies.apply(name, [runs.namespace], [ws_allowed], ["Follow"])
    wait_reason(runs, "paipipelinerun", "run", "PolicyDenied")
    calls = emulator.counters.calls_for(rid)
    time.sleep(3)
    assert emulator.counters.calls_for(rid) == calls
    assert runs.status("run")["runStatus"] == "Running"

    # A namespace label change counts too: a policy selecting by label starts to apply at once.
    policies.delete(name)
    policies.apply(
        name,
        [],
        [ws_other],
        ["Follow"],
        namespaceSelector={"matchLabels": {"team": f"t-{runs.namespace}"}},
    )
    runs.cp.kubectl("label", "namespace", runs.namespace, f"team=t-{runs.namespace}")
    runs.wait_condition("run", "Ready", "True", timeout=20)


def test_the_shipped_rbac_lets_users_write_runs_but_never_policies_or_status(installed: ControlPlane) -> None:
    """The aggregated roles reach Kubernetes' own edit and view roles; policies stay with cluster admins."""

    def can(verb: str, resource: str, cluster_role: str) -> bool:
        resource, _, subresource = resource.partition("/")
        out = installed.kubectl(
            "auth", "can-i", verb, resource, "-n", "default", f"--as=system:serviceaccount:default:{cluster_role}-user",
            *([f"--subresource={subresource}"] if subresource else []), check=False,
        ).stdout.strip()  # fmt: skip
        return out == "yes"

    for role in ("edit", "view"):
        installed.kubectl(
            "create", "rolebinding", f"policy-test-{role}", f"--clusterrole={role}",
            f"--serviceaccount=default:{role}-user", "-n", "default", check=False,
        )  # fmt: skip
    wait_for(lambda: can("create", "paipipelineruns.paiflow-operator.dev", "edit"), 20, what="edit aggregated")
    assert can("delete", "paiworkspaces.paiflow-operator.dev", "edit")
    assert can("patch", "paipipelineruns.paiflow-operator.dev", "edit")
    assert not can("patch", "paipipelineruns.paiflow-operator.dev/status", "edit")
    assert not can("patch", "paiworkspaces.paiflow-operator.dev/status", "edit")
    assert not can("update", "paipipelineruns.paiflow-operator.dev/status", "edit")
    assert not can("create", "paiaccesspolicies.paiflow-operator.dev", "edit")
    assert wait_for(lambda: can("list", "paipipelineruns.paiflow-operator.dev", "view"), 20, what="view aggregated")
    assert not can("create", "paipipelineruns.paiflow-operator.dev", "view")
    assert not can("get", "paiaccesspolicies.paiflow-operator.dev", "view")
    # The operator reads policies and writes their status, nothing more.
    operator = "--as=system:serviceaccount:paiflow-system:paiflow-operator"
    for verb, sub, allowed in [
        ("watch", "", True), ("get", "", True), ("patch", "status", True), ("create", "", False), ("update", "", False),
        ("patch", "", False), ("delete", "", False), ("update", "status", False),
    ]:  # fmt: skip
        args = ["auth", "can-i", verb, "paiaccesspolicies.paiflow-operator.dev", operator]
        out = installed.kubectl(*args, *([f"--subresource={sub}"] if sub else []), check=False).stdout.strip()
        assert (out == "yes") is allowed, (verb, sub, out)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"workspaceIds": []}, "spec.workspaceIds"),
        ({"actions": ["Delete"]}, "spec.actions"),
        ({"identity": {"type": "AssumeRole"}}, "identity.roleArn is required"),
        ({"identity": {"type": "AssumeRole", "roleArn": "arn:aws:iam::1:role/x"}}, "spec.identity.roleArn"),
        ({"limits": {"weight": 0}}, "spec.limits.weight"),
        ({"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In"}]}}, "In and NotIn need values"),
        ({"namespaceSelector": {"matchLabels": {"bad key!": "x"}}}, "matchLabels keys must be valid"),
    ],
)
def test_the_api_server_refuses_a_bad_policy_naming_the_field(
    installed: ControlPlane, change: dict[str, Any], named: str
) -> None:
    body = {
        "apiVersion": GROUP,
        "kind": "PaiAccessPolicy",
        "metadata": {"name": f"bad-{uid()}"},
        "spec": {"namespaceSelector": {}, "workspaceIds": ["1"], "actions": ["Follow"], **change},
    }
    result = installed.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0 and named in result.stderr, result.stderr

"""PaiAccessPolicies at the door (pai_access): what a denial costs (nothing: no keys read, no call), which
identity signs, what the fair limiter is told, a run's answer checked on its own workspace, Verbose on top of
Follow, a Secret's own authority; and the live view and the policies' status."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.test_scheduler import DEFAULT_KEYS, FakeKube, harness

from paiflow_operator.access.identity import Identities
from paiflow_operator.access.policy import Identity, Namespace, Policy, PolicyState
from paiflow_operator.access.status import PolicyStatusWriter, desired
from paiflow_operator.access.view import AccessDenied, AccessView
from paiflow_operator.api.policies import PaiAccessPolicySpec
from paiflow_operator.api.runs import CredentialsSecretRef
from paiflow_operator.pai.credentials import AssumeRoleSource, CredentialSource, DefaultChainSource
from paiflow_operator.pai.models import PipelineRun, RunList
from paiflow_operator.pai_access import Action, Caller, PaiAccess
from paiflow_operator.settings import Settings

__all__ = ["harness"]  # the fixture, imported for pytest

ROLE = "acs:ram::1234567890123456:role/team-a-pai"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def policy_body(name: str, namespace: str, workspaces: list[str], actions: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": 3},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "workspaceIds": workspaces,
            "actions": actions,
            **spec,
        },
    }


class Pai:
    """Answers like PAI, recording each call and the keys that signed it."""

    def __init__(self, run_workspace: str = "ws-1") -> None:
        self.calls: list[tuple[str, str]] = []
        self.run_workspace = run_workspace

    async def _signed(self, name: str, credentials: CredentialSource) -> None:
        self.calls.append((name, (await credentials.get()).access_key_id))

    async def get_pipeline_run(self, run_id: str, *, credentials: CredentialSource, **_: Any) -> PipelineRun:
        await self._signed("get_pipeline_run", credentials)
        return PipelineRun.from_wire(
            {"PipelineRunId": run_id, "Status": "Running", "WorkspaceId": self.run_workspace, "Manifest": "secret code"}
        )

    async def list_pipeline_runs(self, *, credentials: CredentialSource, **_: Any) -> RunList:
        await self._signed("list_pipeline_runs", credentials)
        return RunList.model_validate({"RequestId": "r", "TotalCount": 0, "PipelineRuns": []})


class Limiter:
    def __init__(self) -> None:
        self.acquired: list[tuple[str, float]] = []

    async def acquire(self, tenant: str = "", weight: float = 1.0) -> None:
        self.acquired.append((tenant, weight))


class FakeIdentities(Identities):
    def __init__(self) -> None:
        super().__init__(DEFAULT_KEYS, sts_endpoint="sts.aliyuncs.com")
        self.asked: list[Identity] = []

    def credentials(self, identity: Identity) -> CredentialSource:
        self.asked.append(identity)
        from paiflow_operator.pai.credentials import StaticCredentialSource

        return StaticCredentialSource("STS.role-key", "role-secret", "role-token")


def door(view: AccessView, pai: Pai | None = None) -> tuple[PaiAccess, Pai, Limiter, FakeKube, FakeIdentities]:
    pai = pai or Pai()
    limiter, kube, identities = Limiter(), FakeKube(), FakeIdentities()
    access = PaiAccess(
        Settings(),
        pai,
        kube,
        DEFAULT_KEYS,
        policies=view,
        limiter=limiter,
        identities=identities,  # type: ignore[arg-type]
    )
    return access, pai, limiter, kube, identities


def view_of(*bodies: dict[str, Any], namespaces: list[dict[str, Any]] | None = None) -> AccessView:
    view = AccessView()
    view.load(bodies, namespaces or [])
    return view


def who(action: Action, workspace: str | None = "ws-1", namespace: str = "team-a", **kw: Any) -> Caller:
    return Caller(namespace, "PaiPipelineRun", "r", action, "cn-hangzhou", workspace, **kw)


async def test_a_denied_call_reads_no_keys_takes_no_token_and_sends_nothing() -> None:
    access, pai, limiter, kube, _ = door(view_of())
    with pytest.raises(AccessDenied) as denied:
        await access.get_pipeline_run(who(Action.FOLLOW), "flow-1")
    assert denied.value.code == "PolicyDenied" and "no PaiAccessPolicy selects namespace team-a" in str(denied.value)
    assert pai.calls == [] and limiter.acquired == [] and kube.secret_reads == []


async def test_an_allowed_call_carries_its_tenant_and_weight_to_the_limiter() -> None:
    view = view_of(policy_body("a", "team-a", ["ws-1"], ["Import"], limits={"weight": 4}))
    access, pai, limiter, _, _ = door(view)
    await access.list_pipeline_runs(who(Action.IMPORT), workspace_id="ws-1")
    assert pai.calls == [("list_pipeline_runs", "LTAIoperator")]
    assert limiter.acquired == [("team-a", 4)]
    decision = access.decide(who(Action.IMPORT))
    assert decision.identity.key == "operator"  # type: ignore[union-attr]


async def test_assume_role_signs_with_the_roles_keys() -> None:
    view = view_of(
        policy_body("a", "team-a", ["*"], ["Follow"], identity={"type": "AssumeRole", "roleArn": ROLE}),
    )
    access, pai, _, _, identities = door(view)
    await access.get_pipeline_run(who(Action.FOLLOW), "flow-1")
    assert pai.calls == [("get_pipeline_run", "STS.role-key")]
    assert identities.asked == [Identity("AssumeRole", ROLE)]


async def test_a_runs_answer_is_checked_on_the_workspace_pai_names() -> None:
    view = view_of(policy_body("a", "team-a", ["ws-1"], ["Follow"]))
    access, _, _, _, _ = door(view, Pai(run_workspace="ws-other"))
    # The spec claims ws-1 (allowed), PAI says the run is in ws-other: refused before anything reaches status.
    with pytest.raises(AccessDenied) as denied:
        await access.get_pipeline_run(who(Action.FOLLOW, "ws-1"), "flow-1")
    assert "ws-other" not in str(denied.value) and "this run's workspace" in str(denied.value)
    # No workspace in the spec: asked (Follow allowed somewhere), then the answer decides.
    with pytest.raises(AccessDenied):
        await access.get_pipeline_run(who(Action.FOLLOW, None), "flow-1")
    access_ok, _, _, _, _ = door(view, Pai(run_workspace="ws-1"))
    run = await access_ok.get_pipeline_run(who(Action.FOLLOW, None), "flow-1")
    assert run.workspace_id == "ws-1"


async def test_verbose_needs_verbose_on_top_of_follow() -> None:
    only_follow = view_of(policy_body("a", "team-a", ["ws-1"], ["Follow"]))
    with pytest.raises(AccessDenied, match="allows Verbose"):
        await door(only_follow)[0].get_pipeline_run(who(Action.VERBOSE), "flow-1", verbose=True)
    only_verbose = view_of(policy_body("a", "team-a", ["ws-1"], ["Verbose"]))
    with pytest.raises(AccessDenied, match="allows Follow"):
        await door(only_verbose)[0].get_pipeline_run(who(Action.VERBOSE), "flow-1", verbose=True)
    both = view_of(policy_body("a", "team-a", ["ws-1"], ["Verbose", "Follow"]))
    await door(both)[0].get_pipeline_run(who(Action.VERBOSE), "flow-1", verbose=True)


async def test_inspect_needs_inspect_on_top_of_follow() -> None:
    # A run's nodes, log lines and outputs are its pipeline's own output (issue 19): an action of their own.
    only_follow = view_of(policy_body("a", "team-a", ["ws-1"], ["Follow"]))
    with pytest.raises(AccessDenied, match="allows Inspect"):
        await door(only_follow)[0].get_pipeline_run_node(who(Action.INSPECT), "flow-1", "node-1", depth=2)
    only_inspect = view_of(policy_body("a", "team-a", ["ws-1"], ["Inspect"]))
    with pytest.raises(AccessDenied, match="allows Follow"):
        await door(only_inspect)[0].list_pipeline_run_node_logs(who(Action.INSPECT), "flow-1", "node-1", page_size=5)


async def test_a_conflict_refuses_every_call_of_the_namespace() -> None:
    view = view_of(
        policy_body("a", "team-a", ["*"], ["Follow"], identity={"type": "AssumeRole", "roleArn": ROLE}),
        policy_body("b", "team-a", ["*"], ["Import"], identity={"type": "Operator"}),
    )
    access, pai, _, _, _ = door(view)
    with pytest.raises(AccessDenied) as denied:
        await access.list_pipeline_runs(who(Action.IMPORT), workspace_id="ws-1")
    assert denied.value.code == "PolicyConflict" and pai.calls == []


async def test_a_resource_with_its_own_secret_is_not_denied_and_signs_with_it() -> None:
    access, pai, limiter, kube, _ = door(view_of())
    kube.secrets[("team-a", "keys")] = {"accessKeyId": b"LTAIteam", "accessKeySecret": b"team-secret"}
    ref = CredentialsSecretRef(name="keys")
    await access.get_pipeline_run(who(Action.VERBOSE, credentials_ref=ref), "flow-1", verbose=True)
    assert pai.calls == [("get_pipeline_run", "LTAIteam")]
    assert limiter.acquired == [("team-a", 1)]


# ---- the live view ---------------------------------------------------------------------------------------


def test_the_view_follows_edits_deletes_and_namespace_labels_and_tells_subscribers() -> None:
    view = view_of(namespaces=[{"metadata": {"name": "team-a", "labels": {"team": "a"}}}])
    told: list[int] = []
    view.subscribe(lambda: told.append(view.version))
    label_policy = {
        "metadata": {"name": "by-label"},
        "spec": {"namespaceSelector": {"matchLabels": {"team": "b"}}, "workspaceIds": ["*"], "actions": ["Follow"]},
    }
    view.observe_policy(label_policy, "ADDED")
    assert len(told) == 1
    with pytest.raises(AccessDenied):
        view.check("team-a", "Follow", "ws", "cn-hangzhou")
    view.observe_namespace({"metadata": {"name": "team-a", "labels": {"team": "b"}}}, "MODIFIED")
    assert view.check("team-a", "Follow", "ws", "cn-hangzhou").policies == ("by-label",)
    # A status-only change of the policy is no change to decide on.
    view.observe_policy({**label_policy, "status": {"namespaces": 1}}, "MODIFIED")
    view.observe_namespace({"metadata": {"name": "team-a", "labels": {"team": "b"}}}, "MODIFIED")
    assert len(told) == 2
    view.observe_policy(label_policy, "DELETED")
    with pytest.raises(AccessDenied):
        view.check("team-a", "Follow", "ws", "cn-hangzhou")
    assert len(told) == 3
    # An invalid policy (unreachable through the CRD) grants nothing.
    view.observe_policy({"metadata": {"name": "bad"}, "spec": {"workspaceIds": []}}, "ADDED")
    assert "bad" not in view.policies


def test_allow_all_is_explicit_and_allows_as_the_operator() -> None:
    assert AccessView(allow_all=True).check("any", "Launch", "ws", "cn-hangzhou").identity.key == "operator"
    with pytest.raises(AccessDenied):
        AccessView().check("any", "Launch", "ws", "cn-hangzhou")


# ---- the policies' status --------------------------------------------------------------------------------


def test_policy_status_counts_namespaces_and_shows_conflicts_writing_only_changes() -> None:
    policy = Policy("a", PaiAccessPolicySpec.model_validate(policy_body("a", "x", ["*"], ["Follow"])["spec"]), 3)
    first = desired(policy, PolicyState(2, ()), {}, NOW)
    assert first is not None and first["namespaces"] == 2 and first["observedGeneration"] == 3
    assert first["conditions"][0]["status"] == "True" and first["conditions"][0]["reason"] == "Active"
    assert desired(policy, PolicyState(2, ()), first, NOW) is None
    conflict = desired(policy, PolicyState(2, ("b",)), first, NOW)
    assert conflict is not None and list(conflict) == ["conditions"]
    assert conflict["conditions"][0]["reason"] == "PolicyConflict" and "b" in conflict["conditions"][0]["message"]


class PolicyKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def patch_policy_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((name, patch))
        return {"status": patch}


async def test_one_replica_writes_each_policys_status() -> None:
    view = view_of(
        policy_body("mine", "team-a", ["*"], ["Follow"], identity={"type": "AssumeRole", "roleArn": ROLE}),
        policy_body("theirs", "team-a", ["*"], ["Follow"]),
        namespaces=[{"metadata": {"name": "team-a"}}, {"metadata": {"name": "team-b"}}],
    )
    kube = PolicyKube()
    writer = PolicyStatusWriter(view, kube, lambda key: key == "PaiAccessPolicy/mine", lambda: NOW)
    assert await writer.write_once() is False
    assert [name for name, _ in kube.patches] == ["mine"]
    assert kube.patches[0][1]["namespaces"] == 1
    await writer.write_once()
    assert len(kube.patches) == 1  # nothing changed: nothing written


def test_assume_role_sources_are_made_once_per_role_and_forgotten_with_it() -> None:
    identities = Identities(DefaultChainSource(provider_factory=lambda: None), sts_endpoint="http://127.0.0.1:1")
    one = identities.credentials(Identity("AssumeRole", ROLE))
    assert isinstance(one, AssumeRoleSource) and identities.credentials(Identity("AssumeRole", ROLE)) is one
    identities.forget(set())
    assert identities.credentials(Identity("AssumeRole", ROLE)) is not one
    assert Namespace("x").all_labels() == {"kubernetes.io/metadata.name": "x"}


# ---- live: a policy change re-queues what it held back ---------------------------------------------------


async def test_a_denied_run_recovers_at_once_when_a_policy_allows_it_and_stops_when_denied(harness: Any) -> None:
    h = await harness(slow_retry_interval="5m", default_poll_interval="30s")
    view = AccessView()
    view.load([], [])
    h.access.policies = view
    view.subscribe(h.sched.recheck_denied)
    h.pai.add("flow-1", workspace="ws-1")
    key = h.create("r", "flow-1", workspaceId="ws-1")
    await h.advance(0.1)
    ready = next(c for c in h.kube.status[key]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "PolicyDenied" and h.pai.calls == []
    assert h.delay(key) > 100  # a slow retry: minutes away

    view.observe_policy(policy_body("a", "team-a", ["ws-1"], ["Follow"]), "ADDED")
    assert h.delay(key) <= 1.0  # looked at again now, not in five minutes
    await h.advance(1.1)
    assert h.kube.status[key]["runStatus"] == "Running" and len(h.pai.calls) == 1
    assert next(c for c in h.kube.status[key]["conditions"] if c["type"] == "Ready")["status"] == "True"

    view.observe_policy(policy_body("a", "team-a", ["ws-1"], ["Follow"]), "DELETED")
    await h.advance(40)  # the next poll is refused at the door
    assert len(h.pai.calls) == 1
    status = h.kube.status[key]
    assert status["runStatus"] == "Running"  # the last status stays
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["reason"] == "PolicyDenied"


def test_the_circuit_of_a_call_is_the_identity_its_policy_names() -> None:
    view = view_of(
        policy_body("a", "team-a", ["*"], ["Follow"], identity={"type": "AssumeRole", "roleArn": ROLE}),
        policy_body("b", "team-b", ["*"], ["Follow"]),
    )
    access, _, _, _, _ = door(view)
    assert access.identity(who(Action.FOLLOW)) == f"role:{ROLE}"
    assert access.identity(who(Action.FOLLOW, namespace="team-b")) == "operator"
    secret = who(Action.FOLLOW, namespace="team-b", credentials_ref=CredentialsSecretRef(name="keys"))
    assert access.identity(secret).startswith("secret:team-b/keys/")
    # Refused callers make no call but still name a circuit (never a role they were not granted).
    assert access.identity(who(Action.FOLLOW, namespace="team-c")) == "operator"


async def test_a_namespaces_import_cap_is_its_policys_below_the_operators_ceiling() -> None:
    from paiflow_operator.api.workspaces import PaiWorkspaceSpec
    from paiflow_operator.workspaces.plan import WorkspaceRef
    from paiflow_operator.workspaces.scanner import Watched, WorkspaceScanner

    view = view_of(
        policy_body("a", "team-a", ["*"], ["Import"], limits={"maxImportedRuns": 50}),
        policy_body("b", "team-b", ["*"], ["Import"]),
    )
    access, _, _, kube, _ = door(view)
    access.settings = Settings(max_imported_runs_per_namespace=300)
    runs = SimpleNamespace(set_hurry=lambda hurry: None)  # the cap needs nothing of the runs
    scanner = WorkspaceScanner(access.settings, access, kube, runs, None)  # type: ignore[arg-type]

    def watched(namespace: str) -> Watched:
        spec = PaiWorkspaceSpec(workspaceId="ws-1", maxRuns=100_000)
        return Watched(WorkspaceRef(namespace, "all", f"uid-{namespace}"), 1, spec, {})

    assert scanner._cap(watched("team-a")) == 50
    assert scanner._cap(watched("team-b")) == 300, "no cap of its own: the operator's ceiling, whatever maxRuns asks"

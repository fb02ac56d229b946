"""The PaiAccessPolicy evaluator, table by table: selectors as Kubernetes reads them, default deny, permissions
adding up, identities and their conflicts, limits, and messages that name what is missing."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from paiflow_operator.access.policy import (
    OPERATOR_IDENTITY,
    Allowed,
    Conflict,
    Denied,
    Identity,
    Namespace,
    Policy,
    decide,
    for_secret,
    policy_states,
    selects,
)
from paiflow_operator.api.policies import LabelSelector, PaiAccessPolicySpec

ROLE_A = "acs:ram::1234567890123456:role/team-a-pai"
ROLE_B = "acs:ram::1234567890123456:role/team-b-pai"


def policy(name: str, **spec: Any) -> Policy:
    spec.setdefault("namespaceSelector", {"matchLabels": {"kubernetes.io/metadata.name": name}})
    spec.setdefault("workspaceIds", ["1"])
    spec.setdefault("actions", ["Follow"])
    return Policy(name, PaiAccessPolicySpec.model_validate(spec))


# ---- selectors -------------------------------------------------------------------------------------------

LABELS = {"team": "a", "tier": "prod", "kubernetes.io/metadata.name": "ml"}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, LABELS, True),  # empty selector: everything
        ({}, {}, True),
        ({"matchLabels": {"team": "a"}}, LABELS, True),
        ({"matchLabels": {"team": "b"}}, LABELS, False),
        ({"matchLabels": {"team": "a", "tier": "dev"}}, LABELS, False),  # all must hold
        ({"matchLabels": {"missing": "x"}}, LABELS, False),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}, LABELS, True),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["b"]}]}, LABELS, False),
        ({"matchExpressions": [{"key": "nope", "operator": "In", "values": ["a"]}]}, LABELS, False),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["b"]}]}, LABELS, True),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, LABELS, False),
        # NotIn holds for a namespace without the label at all (labels.Selector semantics)
        ({"matchExpressions": [{"key": "nope", "operator": "NotIn", "values": ["a"]}]}, LABELS, True),
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, LABELS, True),
        ({"matchExpressions": [{"key": "nope", "operator": "Exists"}]}, LABELS, False),
        ({"matchExpressions": [{"key": "nope", "operator": "DoesNotExist"}]}, LABELS, True),
        ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, LABELS, False),
        (
            {
                "matchLabels": {"tier": "prod"},
                "matchExpressions": [
                    {"key": "team", "operator": "In", "values": ["a"]},
                    {"key": "legacy", "operator": "DoesNotExist"},
                ],
            },
            LABELS,
            True,
        ),
        (
            {"matchLabels": {"tier": "prod"}, "matchExpressions": [{"key": "team", "operator": "Exists"}]},
            {"team": "a"},
            False,
        ),
    ],
)
def test_selectors_read_as_kubernetes_reads_them(
    selector: dict[str, Any], labels: dict[str, str], expected: bool
) -> None:
    assert selects(LabelSelector.model_validate(selector), labels) is expected


def test_a_namespace_is_selected_by_name_through_its_metadata_name_label() -> None:
    ml = policy("p", namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "ml"}})
    assert isinstance(decide([ml], Namespace("ml"), "Follow", "1", "cn-hangzhou"), Allowed)
    assert isinstance(decide([ml], Namespace("ml-other"), "Follow", "1", "cn-hangzhou"), Denied)
    # A label someone set by hand cannot pretend to be another namespace's name.
    forged = Namespace("intruder", {"kubernetes.io/metadata.name": "ml"})
    assert isinstance(decide([ml], forged, "Follow", "1", "cn-hangzhou"), Denied)


# ---- decisions -------------------------------------------------------------------------------------------

A = policy(
    "team-a",
    namespaceSelector={"matchLabels": {"team": "a"}},
    workspaceIds=["31337"],
    regions=["cn-hangzhou"],
    actions=["Follow", "Import", "Launch", "Terminate"],
    limits={"weight": 3, "maxImportedRuns": 500},
)
A_VERBOSE = policy(
    "team-a-verbose",
    namespaceSelector={"matchLabels": {"team": "a"}},
    workspaceIds=["*"],
    actions=["Verbose", "Follow"],
)
B = policy(
    "team-b",
    namespaceSelector={"matchLabels": {"team": "b"}},
    workspaceIds=["42"],
    actions=["Follow"],
    identity={"type": "AssumeRole", "roleArn": ROLE_B},
)
ALL = [A, A_VERBOSE, B]
NS_A = Namespace("ml-a", {"team": "a"})
NS_B = Namespace("ml-b", {"team": "b"})
NS_NONE = Namespace("stranger", {"team": "c"})


@pytest.mark.parametrize(
    ("namespace", "action", "workspace", "region", "expected"),
    [
        # default deny: nothing selects it
        (NS_NONE, "Follow", "31337", "cn-hangzhou", "no PaiAccessPolicy selects namespace stranger"),
        (NS_A, "Import", "31337", "cn-hangzhou", ("team-a",)),
        (NS_A, "Launch", "31337", "cn-hangzhou", ("team-a",)),
        (NS_A, "Terminate", "31337", "cn-hangzhou", ("team-a",)),
        # two policies grant Follow in 31337 (one through "*")
        (NS_A, "Follow", "31337", "cn-hangzhou", ("team-a", "team-a-verbose")),
        # permissions add up per policy: Follow anywhere through team-a-verbose, Import only through team-a
        (NS_A, "Follow", "999", "cn-beijing", ("team-a-verbose",)),
        (NS_A, "Import", "999", "cn-hangzhou", "allows Import in workspace 999 (region cn-hangzhou)"),
        (NS_A, "Import", "31337", "cn-beijing", "allows Import in region cn-beijing"),
        (NS_A, "Verbose", "5", "cn-beijing", ("team-a-verbose",)),
        (NS_B, "Verbose", "42", "cn-hangzhou", "no PaiAccessPolicy selecting namespace ml-b allows Verbose"),
        (NS_B, "Launch", "42", "cn-hangzhou", "allows Launch"),
        (NS_B, "Follow", "42", "cn-shanghai", ("team-b",)),  # no regions: any
        (NS_B, "Follow", "31337", "cn-hangzhou", "allows Follow in workspace 31337"),
        # workspace not known yet (PAI will tell): allowed if some workspace could be
        (NS_B, "Follow", None, "cn-hangzhou", ("team-b",)),
        (NS_B, "Import", None, "cn-hangzhou", "allows Import"),
    ],
)
def test_decisions(namespace: Namespace, action: Any, workspace: str | None, region: str, expected: Any) -> None:
    decision = decide(ALL, namespace, action, workspace, region)
    if isinstance(expected, tuple):
        assert isinstance(decision, Allowed), decision
        assert decision.policies == expected
    else:
        assert isinstance(decision, Denied), decision
        assert decision.reason == "PolicyDenied"
        assert expected in decision.message
        assert "PaiAccessPolicy" in decision.message


def test_a_denial_never_names_other_teams_policies_or_a_workspace_pai_told() -> None:
    decision = decide(ALL, NS_B, "Follow", "31337", "cn-hangzhou", name_workspace=False)
    assert isinstance(decision, Denied)
    assert "31337" not in decision.message and "this run's workspace" in decision.message
    for denial in (decision, decide(ALL, NS_NONE, "Launch", "42", "cn-hangzhou")):
        assert isinstance(denial, Denied)
        for other in ("team-a", "team-b", ROLE_B, "42"):
            assert other not in denial.message


def test_no_policies_at_all_denies_everything() -> None:
    for action in ("Follow", "Import", "Launch", "Terminate", "Verbose", "Inspect"):
        assert isinstance(decide([], NS_A, action, "1", "cn-hangzhou"), Denied)


# ---- identities ------------------------------------------------------------------------------------------


def test_identity_defaults_to_the_operator_and_follows_the_one_policy_naming_one() -> None:
    allowed = decide(ALL, NS_A, "Follow", "31337", "cn-hangzhou")
    assert isinstance(allowed, Allowed) and allowed.identity == OPERATOR_IDENTITY
    assert allowed.identity.key == "operator"
    allowed = decide(ALL, NS_B, "Follow", "42", "cn-hangzhou")
    assert isinstance(allowed, Allowed)
    assert allowed.identity == Identity("AssumeRole", ROLE_B) and allowed.identity.key == f"role:{ROLE_B}"


@pytest.mark.parametrize(
    ("first", "second", "conflict"),
    [
        ({"type": "AssumeRole", "roleArn": ROLE_A}, {"type": "AssumeRole", "roleArn": ROLE_B}, True),
        ({"type": "AssumeRole", "roleArn": ROLE_A}, {"type": "Operator"}, True),
        ({"type": "AssumeRole", "roleArn": ROLE_A}, {"type": "AssumeRole", "roleArn": ROLE_A}, False),
        ({"type": "AssumeRole", "roleArn": ROLE_A}, None, False),  # only one names an identity
        ({"type": "Operator"}, None, False),
    ],
)
def test_two_policies_naming_different_identities_conflict(first: Any, second: Any, conflict: bool) -> None:
    p1 = policy("p1", namespaceSelector={"matchLabels": {"team": "a"}}, identity=first)
    p2 = policy("p2", namespaceSelector={"matchExpressions": [{"key": "team", "operator": "Exists"}]}, identity=second)
    decision = decide([p2, p1], NS_A, "Follow", "1", "cn-hangzhou")
    if conflict:
        assert isinstance(decision, Conflict), decision
        assert decision.reason == "PolicyConflict" and decision.policies == ("p1", "p2")
        assert "p1" in decision.message and "p2" in decision.message
        # Whatever the action: no guess for any request of that namespace.
        assert isinstance(decide([p1, p2], NS_A, "Import", "1", "cn-hangzhou"), Conflict)
        # Another namespace only one of them selects is not affected.
        assert isinstance(decide([p1, p2], NS_B, "Follow", "1", "cn-hangzhou"), Allowed)
    else:
        assert isinstance(decision, Allowed), decision
    states = policy_states([p1, p2], [NS_A, NS_B, NS_NONE])
    assert states["p1"].namespaces == 1 and states["p2"].namespaces == 3
    assert states["p1"].conflicts_with == (("p2",) if conflict else ())
    assert states["p2"].conflicts_with == (("p1",) if conflict else ())


# ---- limits and Secrets ----------------------------------------------------------------------------------


def test_limits_take_the_most_generous_selecting_policy() -> None:
    more = policy("more", namespaceSelector={"matchLabels": {"team": "a"}}, limits={"weight": 5})
    allowed = decide([A, A_VERBOSE, more], NS_A, "Import", "31337", "cn-hangzhou")
    assert isinstance(allowed, Allowed)
    assert (allowed.weight, allowed.max_imported_runs) == (5, 500)
    allowed = decide([A_VERBOSE], NS_A, "Follow", "1", "cn-hangzhou")
    assert isinstance(allowed, Allowed) and (allowed.weight, allowed.max_imported_runs) == (1, None)


def test_a_resource_with_its_own_secret_is_never_denied_and_keeps_its_tenants_weight() -> None:
    secret = ("stranger", "pai-credentials", "accessKeyId", "accessKeySecret", "securityToken")
    allowed = for_secret([], NS_NONE, secret)
    assert allowed.identity.type == "Secret" and allowed.weight == 1
    assert allowed.identity.key == "secret:stranger/pai-credentials/accessKeyId/accessKeySecret/securityToken"
    assert for_secret(ALL, NS_A, secret).weight == 3


# ---- the model refuses what the CRD refuses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"workspaceIds": []}, "workspaceIds"),
        ({"workspaceIds": ["bad id"]}, "workspaceIds"),
        ({"actions": ["Delete"]}, "actions"),
        ({"actions": []}, "actions"),
        ({"identity": {"type": "AssumeRole"}}, "roleArn"),
        ({"identity": {"type": "AssumeRole", "roleArn": "arn:aws:iam::1:role/x"}}, "roleArn"),
        ({"identity": {"type": "Operator", "roleArn": ROLE_A}}, "roleArn"),
        ({"limits": {"weight": 0}}, "weight"),
        ({"regions": ["Hangzhou"]}, "regions"),
        ({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "In and NotIn need values"),
        ({"namespaceSelector": {"matchLabels": {"bad key!": "x"}}}, "matchLabels"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    spec = {"namespaceSelector": {}, "workspaceIds": ["1"], "actions": ["Follow"], **change}
    with pytest.raises(ValidationError, match=field):
        PaiAccessPolicySpec.model_validate(spec)

"""Pure: what PaiAccessPolicies allow a namespace to have the operator do in PAI, and as whom.

Default deny: a namespace no policy selects gets nothing. Permissions add up across the policies that select a
namespace, each policy granting its own (action, workspace, region) combinations, as RBAC rules do; limits take
the most generous value. At most one of them may name an identity: two different identities are a conflict,
never a guess. No I/O here: the live view (access/view.py) and the door (pai_access.py) feed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from paiflow_operator.api.policies import (
    ANY_WORKSPACE,
    NAME_LABEL,
    Action,
    LabelSelector,
    PaiAccessPolicySpec,
    PolicyIdentity,
)

POLICY_KIND = "PaiAccessPolicy"
DENIED = "PolicyDenied"
CONFLICT = "PolicyConflict"
ACCESS_REASONS = frozenset({DENIED, CONFLICT})  # the condition reasons of a resource the policies hold back


@dataclass(frozen=True, slots=True)
class Policy:
    """A PaiAccessPolicy as the evaluator needs it."""

    name: str
    spec: PaiAccessPolicySpec
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def all_labels(self) -> Mapping[str, str]:
        # The API server sets kubernetes.io/metadata.name on every namespace (and will not let it be changed);
        # adding it here keeps a test's bare Namespace("ml") the same as the real one.
        return {**self.labels, NAME_LABEL: self.name}


@dataclass(frozen=True, slots=True)
class Identity:
    """Whose credentials sign a call: the operator's own, a RAM role assumed from them, or a namespace's Secret."""

    type: str  # "Operator" | "AssumeRole" | "Secret"
    role_arn: str | None = None
    secret: tuple[str, ...] | None = None  # (namespace, Secret name, key names...) for type Secret

    @property
    def key(self) -> str:
        """One string per set of credentials: what a circuit breaker or a fair queue keys on."""
        if self.type == "AssumeRole":
            return f"role:{self.role_arn}"
        if self.type == "Secret":
            return "secret:" + "/".join(self.secret or ())
        return "operator"

    @classmethod
    def of(cls, identity: PolicyIdentity) -> Identity:
        return cls("AssumeRole", identity.roleArn) if identity.type == "AssumeRole" else OPERATOR_IDENTITY


OPERATOR_IDENTITY = Identity("Operator")


@dataclass(frozen=True, slots=True)
class Allowed:
    identity: Identity
    weight: int = 1
    max_imported_runs: int | None = None
    # The policies that grant this request (empty for a resource acting with its own Secret).
    policies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Denied:
    message: str
    reason: str = DENIED


@dataclass(frozen=True, slots=True)
class Conflict:
    policies: tuple[str, str]
    message: str
    reason: str = CONFLICT


Decision = Allowed | Denied | Conflict


# ---- label selectors, as Kubernetes evaluates them (metav1.LabelSelectorAsSelector) ----------------------


def selects(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """matchLabels and every matchExpression must hold; {} selects everything. NotIn also holds for a namespace
    without the label, DoesNotExist only for one without it: Kubernetes' own semantics."""
    for key, value in (selector.matchLabels or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.matchExpressions or []:
        present = requirement.key in labels
        values = set(requirement.values or ())
        op = requirement.operator
        if op == "In" and not (present and labels[requirement.key] in values):
            return False
        if op == "NotIn" and present and labels[requirement.key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def matching(policies: Iterable[Policy], namespace: Namespace) -> list[Policy]:
    """The policies that select this namespace, by name."""
    labels = namespace.all_labels()
    return sorted((p for p in policies if selects(p.spec.namespaceSelector, labels)), key=lambda p: p.name)


# ---- identity and limits of a namespace ------------------------------------------------------------------


def identity_of(selected: Sequence[Policy]) -> Identity | Conflict:
    """The one identity the selecting policies name (the operator's own when none does), or their conflict."""
    named = [(p.name, Identity.of(p.spec.identity)) for p in selected if p.spec.identity is not None]
    if not named:
        return OPERATOR_IDENTITY
    first_name, first = named[0]
    for other_name, other in named[1:]:
        if other != first:
            return Conflict(
                (first_name, other_name),
                f"{POLICY_KIND}s {first_name} and {other_name} both select this namespace and name different "
                "identities: the operator makes no PAI call for it until one of them changes",
            )
    return first


def limits_of(selected: Sequence[Policy]) -> tuple[int, int | None]:
    """(weight, maxImportedRuns): the most generous of the selecting policies (weight 1 and no cap by default)."""
    weight = max((p.spec.limits.weight for p in selected if p.spec.limits is not None), default=1)
    caps = [p.spec.limits.maxImportedRuns for p in selected if p.spec.limits is not None]
    known = [c for c in caps if c is not None]
    return weight, (max(known) if known else None)


# ---- the decision -------------------------------------------------------------------------------------------


def _grants_workspace(spec: PaiAccessPolicySpec, workspace: str | None) -> bool:
    # None: the workspace is not known before PAI answers; the answer is checked again (decide's docstring).
    return workspace is None or ANY_WORKSPACE in spec.workspaceIds or workspace in spec.workspaceIds


def _grants_region(spec: PaiAccessPolicySpec, region: str) -> bool:
    return spec.regions is None or region in spec.regions


def decide(
    policies: Iterable[Policy],
    namespace: Namespace,
    action: Action,
    workspace: str | None,
    region: str,
    *,
    name_workspace: bool = True,
) -> Decision:
    """May the operator, with the identity the policies give, do ``action`` in ``workspace`` for ``namespace``?

    ``workspace=None`` asks whether any workspace could be allowed (a followed run whose workspace only PAI's
    answer will tell): the caller must decide again on the answer before writing any of it. With
    ``name_workspace=False`` a denial does not repeat the workspace id (it came from PAI, not from the user,
    and may be another team's).
    """
    selected = matching(policies, namespace)
    if not selected:
        return Denied(
            f"no {POLICY_KIND} selects namespace {namespace.name}: the operator acts in PAI for a namespace only "
            f"as a {POLICY_KIND} allows (a cluster admin writes them)"
        )
    identity = identity_of(selected)
    if isinstance(identity, Conflict):
        return identity
    with_action = [p for p in selected if action in p.spec.actions]
    in_region = [p for p in with_action if _grants_region(p.spec, region)]
    granting = [p for p in in_region if _grants_workspace(p.spec, workspace)]
    if not granting:
        what = f"{action}"
        if with_action and not in_region:
            what += f" in region {region}"
        elif in_region:
            what += f" in workspace {workspace}" if name_workspace else " in this run's workspace"
            what += f" (region {region})"
        return Denied(f"no {POLICY_KIND} selecting namespace {namespace.name} allows {what}")
    weight, cap = limits_of(selected)
    return Allowed(identity, weight, cap, tuple(p.name for p in granting))


def for_secret(policies: Iterable[Policy], namespace: Namespace, secret: tuple[str, ...]) -> Allowed:
    """A resource that names its own credentialsSecretRef acts with those keys, its Secret owner's authority:
    never denied by policy (the namespace's Secret-reader RoleBinding is the gate). Weight and cap still come
    from the policies that select the namespace, so fair sharing counts it as that tenant."""
    weight, cap = limits_of(matching(policies, namespace))
    return Allowed(Identity("Secret", secret=secret), weight, cap, ())


# ---- what a policy's own status shows --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyState:
    namespaces: int
    conflicts_with: tuple[str, ...]  # other policies naming a different identity for a namespace both select


def policy_states(policies: Sequence[Policy], namespaces: Iterable[Namespace]) -> dict[str, PolicyState]:
    """Per policy: how many namespaces it selects now, and which policies it conflicts with in any of them."""
    counts = {p.name: 0 for p in policies}
    conflicts: dict[str, set[str]] = {p.name: set() for p in policies}
    for namespace in namespaces:
        selected = matching(policies, namespace)
        for policy in selected:
            counts[policy.name] += 1
        named = [(p.name, Identity.of(p.spec.identity)) for p in selected if p.spec.identity is not None]
        for i, (a, ida) in enumerate(named):
            for b, idb in named[i + 1 :]:
                if ida != idb:
                    conflicts[a].add(b)
                    conflicts[b].add(a)
    return {name: PolicyState(counts[name], tuple(sorted(conflicts[name]))) for name in counts}

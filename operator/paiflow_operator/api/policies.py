"""The PaiAccessPolicy API: which namespaces may have the operator act in which PAI workspaces, and as whom.

Cluster-scoped and written by cluster admins only (users get no verb on it, see deploy/base/rbac.yaml). The
pydantic models are the source of truth for its CRD in crds/; access/policy.py evaluates them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from paiflow_operator.api.common import _cel, _Model
from paiflow_operator.api.runs import REGION_PATTERN, WORKSPACE_PATTERN, Condition
from paiflow_operator.api.workspaces import LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, MAX_RUNS_LIMIT

KIND = "PaiAccessPolicy"
PLURAL = "paiaccesspolicies"
SINGULAR = "paiaccesspolicy"
SHORT_NAMES = ["paipol"]
CATEGORIES = ["pai"]

# What a namespace may have the operator do for it. Verbose and Inspect are separate from Follow: a run's
# manifest, arguments and options carry a team's code and parameters, its nodes' log lines and outputs its
# pipeline's own output; its status does neither.
Action = Literal["Follow", "Import", "Launch", "Terminate", "Verbose", "Inspect"]
ACTIONS: tuple[Action, ...] = ("Follow", "Import", "Launch", "Terminate", "Verbose", "Inspect")
ANY_WORKSPACE = "*"
# acs:ram::<16-digit account>:role/<role name> (RAM role names: letters, digits, '.', '-', up to 64).
ROLE_ARN_PATTERN = r"^acs:ram::[0-9]{16}:role/[A-Za-z0-9.-]{1,64}$"
WORKSPACE_OR_ANY_PATTERN = r"^(\*|[A-Za-z0-9][A-Za-z0-9_-]{0,63})$"
assert WORKSPACE_PATTERN == r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # kept in step with the pattern above
MAX_WEIGHT = 1000
NAME_LABEL = "kubernetes.io/metadata.name"

LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN, max_length=317)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN, max_length=63)]


class LabelSelectorRequirement(_Model):
    """One matchExpressions entry, as metav1.LabelSelectorRequirement."""

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : "
                    "!has(self.values) || size(self.values) == 0",
                    "namespaceSelector.matchExpressions: In and NotIn need values, Exists and DoesNotExist take none",
                )
            ]
        },
    )

    key: LabelKey = Field(description="The label key the selector applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="In, NotIn, Exists, DoesNotExist.")
    values: list[LabelValue] | None = Field(default=None, max_length=64, description="For In and NotIn.")

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if (self.operator in ("In", "NotIn")) != bool(self.values):
            raise ValueError("matchExpressions: In and NotIn need values, Exists and DoesNotExist take none")
        return self


class LabelSelector(_Model):
    """A standard Kubernetes label selector over Namespaces. Every namespace has the label
    kubernetes.io/metadata.name=<its name>, so one namespace is {matchLabels: {kubernetes.io/metadata.name: ml}}.
    An empty selector ({}) selects every namespace."""

    matchLabels: dict[str, LabelValue] | None = Field(
        default=None,
        description="Labels a namespace must all have.",
        json_schema_extra={
            "maxProperties": 64,
            "x-kubernetes-validations": [
                _cel(
                    f"self.all(k, size(k) <= 317 && k.matches('{LABEL_KEY_PATTERN}'))",
                    "namespaceSelector.matchLabels keys must be valid Kubernetes label keys",
                )
            ],
        },
    )
    matchExpressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=64, description="Requirements a namespace must all meet."
    )

    @field_validator("matchLabels")
    @classmethod
    def _keys_valid(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            if len(key) > 317 or not re.fullmatch(LABEL_KEY_PATTERN, key):
                raise ValueError(f"namespaceSelector.matchLabels: {key} is not a valid label key")
        return value


class PolicyIdentity(_Model):
    """Whose credentials sign the PAI calls of the selected namespaces."""

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.type == 'AssumeRole' ? has(self.roleArn) : !has(self.roleArn)",
                    "identity.roleArn is required with type AssumeRole and not allowed with type Operator",
                )
            ]
        },
    )

    type: Literal["Operator", "AssumeRole"] = Field(
        default="Operator",
        description="Operator: the operator's own credentials. AssumeRole: STS AssumeRole from the operator's "
        "credentials into roleArn; PAI and ActionTrail then see that role.",
    )
    roleArn: str | None = Field(
        default=None,
        description="The RAM role to assume, e.g. acs:ram::1234567890123456:role/team-a-pai. Its trust policy "
        "must allow the operator's own identity.",
        pattern=ROLE_ARN_PATTERN,
        max_length=128,
    )

    @model_validator(mode="after")
    def _role_fits_type(self) -> PolicyIdentity:
        if (self.type == "AssumeRole") != (self.roleArn is not None):
            raise ValueError("identity.roleArn is required with type AssumeRole and not allowed with type Operator")
        return self

    @property
    def key(self) -> str:
        """Which credentials sign: "operator" or "role:<arn>" (the identity the circuit and fairness key on)."""
        return "operator" if self.roleArn is None else f"role:{self.roleArn}"


class PolicyLimits(_Model):
    """Per selected namespace."""

    maxImportedRuns: int | None = Field(
        default=None,
        ge=0,
        le=MAX_RUNS_LIMIT,
        description="At most this many PaiPipelineRuns imported by PaiWorkspaces in one namespace.",
    )
    weight: int = Field(
        default=1,
        ge=1,
        le=MAX_WEIGHT,
        description="The namespace's share of the operator's PAI calls when calls must wait (relative to others).",
    )


# A sink's name: what a PaiPipelineRun's spec.notify.sink names and status.notification records (a DNS label).
SINK_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
SINK_URL_PATTERN = r"^https?://[^\s]+$"


class PolicySink(_Model):
    """A CloudEvents sink the selected namespaces' runs may choose by name (spec.notify.sink). Only a cluster
    admin writes policies, so a user can pick among these URLs but never name one of their own."""

    name: str = Field(description="The name runs choose it by.", pattern=SINK_NAME_PATTERN, max_length=63)
    url: str = Field(
        description="Where the completion CloudEvents are POSTed (http or https; https certificates are verified).",
        pattern=SINK_URL_PATTERN,
        max_length=2048,
    )


class PaiAccessPolicySpec(_Model):
    namespaceSelector: LabelSelector = Field(
        description="The namespaces this policy applies to (a standard label selector; {} selects all)."
    )
    workspaceIds: list[Annotated[str, StringConstraints(pattern=WORKSPACE_OR_ANY_PATTERN, max_length=64)]] = Field(
        min_length=1,
        max_length=256,
        description='PAI workspaces these namespaces may reach; "*" for any.',
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    regions: list[Annotated[str, StringConstraints(pattern=REGION_PATTERN, max_length=64)]] | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="Regions these namespaces may reach (default: any region the operator allows).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    actions: list[Action] = Field(
        min_length=1,
        max_length=6,
        description="Follow: mirror a run's status by id. Import: PaiWorkspace. Launch: spec.launch creates runs. "
        "Terminate: spec.terminate and deletionPolicy Terminate. Verbose: also mirror manifest, arguments, options. "
        "Inspect: also read progress, failed nodes' log tails and outputs (status.progress, nodes, failure, outputs).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    identity: PolicyIdentity | None = Field(
        default=None,
        description="Whose credentials sign the calls (default: the operator's own). At most one policy selecting "
        "a namespace may name an identity; two different ones are a PolicyConflict.",
    )
    limits: PolicyLimits | None = Field(default=None, description="Per-namespace limits.")
    sinks: list[PolicySink] | None = Field(
        default=None,
        max_length=16,
        description="CloudEvents sinks the selected namespaces' PaiPipelineRuns may choose (spec.notify.sink), "
        "besides the operator-wide one (PAIFLOW_NOTIFY_SINK).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class PaiAccessPolicyStatus(_Model):
    observedGeneration: int | None = None
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    namespaces: int | None = Field(default=None, description="Namespaces this policy selects now.")


class PaiAccessPolicy(_Model):
    """Lets the namespaces it selects have the paiflow operator act in PAI workspaces; nothing else may."""

    spec: PaiAccessPolicySpec
    status: PaiAccessPolicyStatus | None = Field(default=None, json_schema_extra={"default": {"observedGeneration": 0}})


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Namespaces", "type": "integer", "jsonPath": ".status.namespaces", "description": "Selected now"},
    {"name": "Identity", "type": "string", "jsonPath": ".spec.identity.type"},
    {"name": "Actions", "type": "string", "jsonPath": ".spec.actions"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "False while the policy conflicts with another",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Workspaces", "type": "string", "jsonPath": ".spec.workspaceIds", "priority": 1},
    {"name": "Role", "type": "string", "jsonPath": ".spec.identity.roleArn", "priority": 1},
]

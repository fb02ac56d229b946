"""The PaiPipelineRun API: pydantic models of spec and status, the single source of truth for crds/."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from paiflow_operator.api.common import _cel, _Model
from paiflow_operator.api.inside import MAX_STATUS_OUTPUTS, NodesSummary, RunFailure, RunOutput

GROUP = "paiflow-operator.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PaiPipelineRun"
PLURAL = "paipipelineruns"
SINGULAR = "paipipelinerun"
# `pprs` as Tekton has `prs`: kubectl matches short names exactly, so the plural needs its own.
SHORT_NAMES = ["ppr", "pprs", "pairun"]
CATEGORIES = ["pai"]
# `kubectl get pprs --field-selector status.runStatus=Failed` (CRD selectableFields, GA in Kubernetes 1.32).
SELECTABLE_FIELDS = [{"jsonPath": ".status.runStatus"}, {"jsonPath": ".spec.pipelineRunId"}]

MIN_POLL_INTERVAL = "5s"
MAX_POLL_INTERVAL = "1h"

# PAI run ids look like flow-j94y0000000000lf7a or run-rbvg...ks92.
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
REGION_PATTERN = r"^[a-z]{2,}(-[a-z0-9]+)+$"
WORKSPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# The subset of Go's time.ParseDuration syntax that CEL's duration() accepts and people write.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]{1,253}$"
PIPELINE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,255}$"
# The run name the user asks for; the operator appends the resource's uid (see launch_reconcile.run_name).
RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# PAI's CreatePipelineRun takes the manifest inline in a JSON body; keep one object well under etcd's limit.
MAX_MANIFEST_BYTES = 512 * 1024
FINALIZER = "paiflow-operator.dev/terminate-run"

DeletionPolicy = Literal["Retain", "Terminate"]
LaunchPhase = Literal["Creating", "Refused", "Recorded", "Started", "Created", "Cancelled"]

ManifestType = Literal["Raw", "Frozen", "Rendered", "Expanded", "Runtime"]

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """Parses the Go-style durations the CRD admits (``30s``, ``1m30s``, ``1.5h``)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 2m, 1h)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


class SecretKeySelector(_Model):
    """A key of a Secret in the PaiPipelineRun's own namespace (there is deliberately no namespace field)."""

    name: str = Field(
        description="Name of a Secret in the same namespace.", pattern=SECRET_NAME_PATTERN, max_length=253
    )
    key: str = Field(default="token", description="Key within the Secret.", pattern=SECRET_KEY_PATTERN, max_length=253)


class CredentialsSecretRef(_Model):
    """A Secret in the same namespace holding an AccessKey pair and, optionally, an STS token."""

    name: str = Field(
        description="Name of a Secret in the same namespace.", pattern=SECRET_NAME_PATTERN, max_length=253
    )
    accessKeyIdKey: str = Field(default="accessKeyId", pattern=SECRET_KEY_PATTERN, max_length=253)
    accessKeySecretKey: str = Field(default="accessKeySecret", pattern=SECRET_KEY_PATTERN, max_length=253)
    securityTokenKey: str = Field(
        default="securityToken",
        description="Optional key holding an STS security token; ignored when absent from the Secret.",
        pattern=SECRET_KEY_PATTERN,
        max_length=253,
    )


class ConfigMapKeySelector(_Model):
    """A key of a ConfigMap in the PaiPipelineRun's own namespace."""

    name: str = Field(
        description="Name of a ConfigMap in the same namespace.", pattern=SECRET_NAME_PATTERN, max_length=253
    )
    key: str = Field(description="Key within the ConfigMap.", pattern=SECRET_KEY_PATTERN, max_length=253)


_FREE_FORM: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}


class PipelineLaunch(_Model):
    """What the operator sends to PAI's CreatePipelineRun. Immutable: a new run means a new resource."""

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "[has(self.pipelineId), has(self.manifest), has(self.manifestFrom)].filter(x, x).size() == 1",
                    "spec.launch needs exactly one of pipelineId, manifest or manifestFrom",
                )
            ]
        },
    )

    workspaceId: str = Field(
        description="PAI workspace the run is created in.", pattern=WORKSPACE_PATTERN, max_length=64
    )
    pipelineId: str | None = Field(
        default=None, description="A pipeline registered in PAI.", pattern=PIPELINE_ID_PATTERN, max_length=256
    )
    manifest: str | None = Field(
        default=None,
        description="The pipeline manifest (YAML or JSON text) given inline.",
        max_length=MAX_MANIFEST_BYTES,
    )
    manifestFrom: ConfigMapKeySelector | None = Field(
        default=None,
        description="The pipeline manifest read from a ConfigMap key in the same namespace (read once, at creation).",
    )
    arguments: dict[str, Any] | None = Field(
        default=None,
        description="PAI's Arguments document as structured YAML, e.g. {arguments: {parameters: [{name, value}]}}; "
        "sent as JSON.",
        json_schema_extra=_FREE_FORM,
    )
    options: dict[str, Any] | None = Field(
        default=None,
        description="PAI's Options document as structured YAML; sent as JSON.",
        json_schema_extra=_FREE_FORM,
    )
    name: str | None = Field(
        default=None,
        description="Run name prefix in PAI (default: the resource's name). The operator appends the resource's uid, "
        "which is how it finds the run again after a crash.",
        pattern=RUN_NAME_PATTERN,
        max_length=63,
    )
    accessibility: Literal["PRIVATE", "PUBLIC"] | None = Field(
        default=None, description="Who sees the run in the workspace (PAI's default: PRIVATE)."
    )

    @model_validator(mode="after")
    def _one_pipeline(self) -> PipelineLaunch:
        # Mirrors the CRD's CEL rule, for objects that reach the operator some other way (tests, old CRDs).
        if sum(x is not None for x in (self.pipelineId, self.manifest, self.manifestFrom)) != 1:
            raise ValueError("spec.launch needs exactly one of pipelineId, manifest or manifestFrom")
        return self


class RunNotify(_Model):
    """Where the completion CloudEvent of this run goes."""

    sink: str = Field(
        description="A sink by name, among those the PaiAccessPolicies selecting this namespace list (never a URL). "
        "Unset notify: the operator-wide sink, if any.",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        max_length=63,
    )


def without_launch_payload(spec: Mapping[str, Any], status: Mapping[str, Any]) -> Mapping[str, Any]:
    """spec as the operator keeps it in memory: once the launched run exists (status.pipelineRunId), its inline
    manifest and arguments (up to the object size limit each, at thousands of runs) are never read again.
    The manifest becomes "" so that the spec still names exactly one source; the object itself is unchanged."""
    launch = spec.get("launch")
    if not isinstance(launch, Mapping) or not status.get("pipelineRunId"):
        return spec
    if launch.get("manifest") is None and launch.get("arguments") is None:
        return spec
    slim = {k: v for k, v in launch.items() if k != "arguments"}
    if launch.get("manifest") is not None:
        slim["manifest"] = ""
    return {**spec, "launch": slim}


_SPEC_RULES: list[Any] = [
    _cel(
        "has(self.pipelineRunId) != has(self.launch)",
        "set exactly one of spec.pipelineRunId (follow an existing run) or spec.launch (start a new one)",
    ),
    _cel(
        "has(oldSelf.launch) == has(self.launch)",
        "spec.launch cannot be added to or removed from an existing PaiPipelineRun; create a new one",
    ),
    _cel("!self.terminate || has(self.launch)", "spec.terminate applies only to launched runs (spec.launch)"),
    _cel(
        "self.deletionPolicy == 'Retain' || has(self.launch)",
        "spec.deletionPolicy Terminate applies only to launched runs (spec.launch)",
    ),
    _cel("!oldSelf.terminate || self.terminate", "spec.terminate cannot be undone once set"),
]


class PaiPipelineRunSpec(_Model):
    """Which PAI pipeline run to follow (its id, region, workspace) or to start (launch), with what credentials
    and how often."""

    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, json_schema_extra={"x-kubernetes-validations": _SPEC_RULES}
    )

    pipelineRunId: str | None = Field(
        default=None,
        description="The PAI pipeline run to follow, e.g. flow-j94y0000000000lf7a. Immutable. "
        "Exactly one of pipelineRunId and launch.",
        pattern=RUN_ID_PATTERN,
        max_length=128,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("self == oldSelf", "pipelineRunId is immutable; create a new PaiPipelineRun instead")
            ]
        },
    )
    regionId: str | None = Field(
        default=None,
        description="Region of the run, e.g. cn-hangzhou. Defaults to the operator's region.",
        pattern=REGION_PATTERN,
        max_length=64,
    )
    workspaceId: str | None = Field(
        default=None,
        description="Workspace of the run. Optional; lets the operator batch status queries from the start.",
        pattern=WORKSPACE_PATTERN,
        max_length=64,
    )
    verbose: bool = Field(
        default=False, description="Also mirror Manifest, Arguments and Options (size-bounded) into status."
    )
    manifestType: ManifestType | None = Field(
        default=None, description="Which manifest PAI returns when verbose is set (default Raw)."
    )
    tokenSecretRef: SecretKeySelector | None = Field(
        default=None, description="Secret key holding the share TokenId of a shared run (a credential)."
    )
    credentialsSecretRef: CredentialsSecretRef | None = Field(
        default=None,
        description="Secret with accessKeyId/accessKeySecret[/securityToken]. Default: the operator's own "
        "credentials (RRSA on ACK, environment, RAM role).",
    )
    pollInterval: str | None = Field(
        default=None,
        description=f"How often to ask PAI while the run is active ({MIN_POLL_INTERVAL} to "
        f"{MAX_POLL_INTERVAL}). Default: the operator's setting.",
        pattern=DURATION_PATTERN,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    f"duration(self) >= duration('{MIN_POLL_INTERVAL}') && "
                    f"duration(self) <= duration('{MAX_POLL_INTERVAL}')",
                    f"pollInterval must be between {MIN_POLL_INTERVAL} and {MAX_POLL_INTERVAL}",
                )
            ]
        },
    )
    suspend: bool = Field(default=False, description="Stop polling PAI without deleting the resource.")
    inside: bool | None = Field(
        default=None,
        description="Read the run's progress, failure details and outputs (status.progress, nodes, failure, "
        "outputs): calls PAI prices, on a budget of their own. Unset: the operator's default (true unless "
        "PAIFLOW_INSIDE=false); runs a PaiWorkspace imports get false unless its template sets inside.",
    )
    launch: PipelineLaunch | None = Field(
        default=None,
        description="Start a new PAI run (once) and follow it. Immutable. Exactly one of pipelineRunId and launch.",
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self == oldSelf",
                    "spec.launch is immutable; create a new PaiPipelineRun (metadata.generateName suits repeated runs)",
                )
            ]
        },
    )
    terminate: bool = Field(
        default=False, description="Terminate the launched run (once); it shows Terminating, then Terminated."
    )
    notify: RunNotify | None = Field(
        default=None,
        description="Send the completion CloudEvent to a sink the namespace's access policies list, by name.",
    )
    deletionPolicy: DeletionPolicy = Field(
        default="Retain",
        description="What deleting this resource does to a run it launched: Retain leaves it running, Terminate "
        "terminates it first (a finalizer holds the delete until PAI accepts the termination).",
    )

    @model_validator(mode="after")
    def _follow_or_launch(self) -> PaiPipelineRunSpec:
        if (self.pipelineRunId is None) == (self.launch is None):
            raise ValueError("set exactly one of spec.pipelineRunId or spec.launch")
        return self

    @property
    def launched(self) -> bool:
        return self.launch is not None

    @field_validator("pollInterval")
    @classmethod
    def _interval_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(_Model):
    """A condition as the Kubernetes API conventions define it (metav1.Condition)."""

    type: str = Field(max_length=316)
    status: ConditionStatus
    reason: str = Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=32768)
    lastTransitionTime: datetime
    observedGeneration: int | None = Field(default=None, ge=0)


class LaunchStatus(_Model):
    """The operator's record of creating the run: written before CreatePipelineRun is sent."""

    phase: LaunchPhase = Field(
        description="Creating: a CreatePipelineRun may be in flight (the operator lists this resource's runs by "
        "SourceId and name before sending another); Refused: PAI refused the last one; Recorded: pipelineRunId is "
        "the run, created unstarted, StartPipelineRun not confirmed yet; Started: PAI accepted StartPipelineRun; "
        "Created: created (and started at once) by an earlier version of the operator; Cancelled: spec.terminate "
        "came first, no run was or will be started."
    )
    runName: str = Field(description="The run's name in PAI: unique to this resource (it ends with its uid).")
    claimedAt: datetime | None = Field(
        default=None, description="When the last create attempt was recorded, right before its request left."
    )
    attempts: int = Field(default=0, ge=0, description="CreatePipelineRun calls sent so far.")
    unconfirmed: int = Field(
        default=0,
        ge=0,
        description="Earlier creates whose answer was lost and whose run has not been found yet: while above 0, the "
        "operator looks for such runs (never started) and deletes them.",
    )
    lookedUpAt: datetime | None = Field(
        default=None, description="When the operator last listed this resource's runs in PAI."
    )
    terminationRequestedAt: datetime | None = Field(
        default=None, description="When PAI accepted TerminatePipelineRun for spec.terminate."
    )


class NotificationStatus(_Model):
    """The completion CloudEvent delivered for this run (runs/notify.py): what makes delivery survive a restart."""

    sink: str = Field(description="The sink's name (default: the operator-wide sink), never its URL.", max_length=253)
    type: str = Field(description="The CloudEvent type, e.g. dev.paiflow-operator.pipelinerun.succeeded.v1.")
    id: str = Field(description="The CloudEvent id (the same on every retry, for consumers to drop duplicates).")
    deliveredAt: datetime = Field(description="When the sink acknowledged it (2xx).")
    attempts: int = Field(ge=1, description="POSTs it took.")


class PaiPipelineRunStatus(_Model):
    """The run as PAI last reported it, and for launched runs the operator's record of creating it (written by
    the operator only)."""

    pipelineRunId: str | None = Field(
        default=None, description="The PAI run: spec.pipelineRunId, or the run the operator launched."
    )
    launch: LaunchStatus | None = None
    runStatus: str | None = Field(
        default=None,
        description="PAI's Status: Initialized, Running, Succeeded, Failed, Suspended, Terminated, Unknown, "
        "Skipped or Terminating (a value PAI adds later is shown as it comes).",
        max_length=64,
    )
    message: str | None = Field(default=None, description="PAI's message (why a run failed).")
    duration: int | None = Field(
        default=None,
        description="Seconds the run ran, per PAI; set once the run has ended (while it runs, see startedAt).",
    )
    startedAt: datetime | None = None
    finishedAt: datetime | None = None
    createdAt: datetime | None = Field(default=None, description="PAI's GmtCreateTime.")
    modifiedAt: datetime | None = Field(default=None, description="PAI's GmtModifiedTime.")
    name: str | None = Field(default=None, description="The run's name in PAI.")
    pipelineId: str | None = None
    workspaceId: str | None = None
    nodeId: str | None = None
    sourceType: str | None = None
    sourceId: str | None = None
    userId: str | None = None
    accessibility: str | None = None
    pipelineRunUri: str | None = None
    manifest: str | None = Field(default=None, description="Only with spec.verbose; cut to a bounded size.")
    arguments: str | None = Field(default=None, description="Only with spec.verbose; cut to a bounded size.")
    options: str | None = Field(default=None, description="Only with spec.verbose; cut to a bounded size.")
    truncatedFields: list[str] | None = Field(
        default=None, description="Fields cut to the size limit (manifest, arguments, options)."
    )
    progress: str | None = Field(
        default=None,
        description="Leaf nodes ended of all leaf nodes, as done/total (e.g. 3/5), refreshed less often than "
        "runStatus while the run is active.",
        max_length=32,
        pattern=r"^[0-9]+/[0-9]+$",
    )
    nodes: NodesSummary | None = Field(default=None, description="A bounded summary of the run's nodes.")
    failure: RunFailure | None = Field(default=None, description="Set once when the run has failed.")
    outputs: list[RunOutput] | None = Field(
        default=None,
        max_length=MAX_STATUS_OUTPUTS,
        description="Set once when the run has succeeded: its Model, DataSet and Metrics outputs.",
    )
    outputsOmitted: int | None = Field(default=None, ge=0, description="Outputs left out (bound or type).")
    requestId: str | None = Field(default=None, description="PAI RequestId of the last answer written.")
    lastSyncTime: datetime | None = Field(
        default=None,
        description="When the operator last confirmed this status with PAI (a coarse heartbeat: "
        "refreshed on changes and at most every few minutes otherwise).",
    )
    observedGeneration: int | None = None
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    notification: NotificationStatus | None = Field(
        default=None, description="The completion CloudEvent sent when the run ended (with a sink configured)."
    )


def _fixed_once_claimed(field: str, why: str) -> dict[str, Any]:
    """A transition rule on the whole object: spec.<field> may not change once status.launch exists (the operator
    claimed the launch, so a create may have been sent with the old value)."""
    new, old = f"self.spec.{field}", f"oldSelf.spec.{field}"
    same = f"has({new}) == has({old}) && (!has({new}) || {new} == {old})"
    return _cel(
        f"!has(oldSelf.status) || !has(oldSelf.status.launch) || ({same})",
        f"spec.{field} cannot change once the operator has claimed the launch (status.launch is set): {why}; "
        "create a new PaiPipelineRun",
        fieldPath=f".spec.{field}",
        reason="FieldValueForbidden",
    )


# Root-level, because "launched" is in status: a change of region or keys would send the next create (after an
# unknown outcome) to another region or account, where the lookup cannot see the run the first one made.
_OBJECT_RULES: list[Any] = [
    _fixed_once_claimed("regionId", "the run lives in the region it was created in"),
    _fixed_once_claimed("credentialsSecretRef", "the run belongs to the account whose keys created it"),
]


class PaiPipelineRun(_Model):
    """Follows one Alibaba Cloud PAI pipeline run and mirrors its status."""

    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, json_schema_extra={"x-kubernetes-validations": _OBJECT_RULES}
    )

    spec: PaiPipelineRunSpec
    # The API server defaults a new object's status to observedGeneration 0, so that kstatus (Flux) reads
    # it as InProgress, not Current, until the operator's first sync: a GitOps gate cannot pass early.
    status: PaiPipelineRunStatus | None = Field(default=None, json_schema_extra={"default": {"observedGeneration": 0}})


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Run ID", "type": "string", "jsonPath": ".status.pipelineRunId"},
    {"name": "Status", "type": "string", "jsonPath": ".status.runStatus", "description": "PAI's Status"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress", "description": "Leaf nodes done/total"},
    {"name": "Duration", "type": "integer", "jsonPath": ".status.duration", "description": "Seconds"},
    {"name": "Started", "type": "date", "jsonPath": ".status.startedAt"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the status is in sync with PAI",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "description": "Why the status is or is not in sync with PAI",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Finished", "type": "date", "jsonPath": ".status.finishedAt", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1, "description": "PAI's"},
    {
        "name": "Sync Message",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
        "priority": 1,
        "description": "Why the status is or is not in sync with PAI",
    },
]

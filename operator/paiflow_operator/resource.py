"""The PaiPipelineRun API: pydantic models of spec and status, the single source of truth for crds/."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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

ManifestType = Literal["Raw", "Frozen", "Rendered", "Expanded", "Runtime"]

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """Parses the Go-style durations the CRD admits (``30s``, ``1m30s``, ``1.5h``)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 2m, 1h)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def _cel(rule: str, message: str, **extra: str) -> dict[str, Any]:
    return {"rule": rule, "message": message, **extra}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


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


class PaiPipelineRunSpec(_Model):
    """Which PAI pipeline run to follow (its id, region, workspace), with what credentials and how often."""

    pipelineRunId: str = Field(
        description="The PAI pipeline run to follow, e.g. flow-j94y0000000000lf7a. Immutable.",
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


class PaiPipelineRunStatus(_Model):
    """The run as PAI last reported it (written by the operator only)."""

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


class PaiPipelineRun(_Model):
    """Follows one Alibaba Cloud PAI pipeline run and mirrors its status."""

    spec: PaiPipelineRunSpec
    # The API server defaults a new object's status to observedGeneration 0, so that kstatus (Flux) reads
    # it as InProgress, not Current, until the operator's first sync: a GitOps gate cannot pass early.
    status: PaiPipelineRunStatus | None = Field(default=None, json_schema_extra={"default": {"observedGeneration": 0}})


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Run ID", "type": "string", "jsonPath": ".spec.pipelineRunId"},
    {"name": "Status", "type": "string", "jsonPath": ".status.runStatus", "description": "PAI's Status"},
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

"""The PaiWorkspace API: one PAI workspace (or a filtered part of it) mirrored as PaiPipelineRuns.

Pydantic models of spec and status, the source of truth for its CRD in crds/ (as resource.py is for runs).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator

from paiflow_operator.api.common import _cel, _Model
from paiflow_operator.api.runs import (
    DURATION_PATTERN,
    MAX_POLL_INTERVAL,
    MIN_POLL_INTERVAL,
    REGION_PATTERN,
    RUN_ID_PATTERN,
    WORKSPACE_PATTERN,
    Condition,
    CredentialsSecretRef,
    parse_duration,
)

KIND = "PaiWorkspace"
PLURAL = "paiworkspaces"
SINGULAR = "paiworkspace"
SHORT_NAMES = ["paiws"]
CATEGORIES = ["pai"]
# `kubectl get paiws --field-selector spec.workspaceId=...`
SELECTABLE_FIELDS = [{"jsonPath": ".spec.workspaceId"}]

# The most a single PaiWorkspace may import: beyond this the API server and every watcher pay for objects
# nobody reads; split the workspace by filters instead.
MAX_RUNS_LIMIT = 100_000
MAX_IMPORT_WINDOW = "8760h"  # one year
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
# Every imported run carries the template's labels and annotations: at the namespace ceiling of imported runs,
# a few KiB each is already tens of MiB in etcd and in every watcher's memory. Keys and values together, bytes.
TEMPLATE_LABELS_MAX_BYTES = 2048
TEMPLATE_ANNOTATIONS_MAX_BYTES = 4096


def _total_size_rule(field: str, limit: int) -> dict[str, Any]:
    return _cel(
        f"self.map(k, size(k) + size(self[k])).sum() <= {limit}",
        f"{field} must be at most {limit} bytes, keys and values together",
    )


def _check_total_size(field: str, value: dict[str, str] | None, limit: int) -> None:
    total = sum(len(k.encode()) + len(v.encode()) for k, v in (value or {}).items())
    if total > limit:
        raise ValueError(f"{field} must be at most {limit} bytes, keys and values together (is {total})")


SourceType = Literal["UNKNOWN", "SDK", "DESIGNER", "M6"]
# PAI's documented run states; filters name them as PAI spells them.
RunStatusName = Literal[
    "Initialized", "Running", "Succeeded", "Failed", "Suspended", "Terminated", "Unknown", "Skipped", "Terminating"
]


def _duration_between(low: str, high: str, field: str) -> dict[str, Any]:
    return {
        "x-kubernetes-validations": [
            _cel(
                f"duration(self) >= duration('{low}') && duration(self) <= duration('{high}')",
                f"{field} must be between {low} and {high}",
            )
        ]
    }


class WorkspaceFilters(_Model):
    """Which runs to mirror; each field maps onto a ListPipelineRuns parameter of the same name."""

    pipelineIds: list[Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN, max_length=128)]] | None = Field(
        default=None,
        description="PipelineIds: only runs of these pipelines (PAI documents this filter for M6 sources).",
        max_length=50,
    )
    sourceType: SourceType | None = Field(default=None, description="SourceType: SDK, DESIGNER, M6 or UNKNOWN.")
    sourceId: str | None = Field(default=None, description="SourceId.", max_length=256)
    userId: str | None = Field(default=None, description="UserId: runs created by this user.", max_length=64)
    name: str | None = Field(default=None, description="Name: PAI's run-name match.", max_length=256)
    statuses: list[RunStatusName] | None = Field(
        default=None,
        description="Status: import only runs in these states. Applied by the operator, not sent to PAI: a run "
        "that leaves the state must still be seen by the scan to show its end.",
        max_length=9,
    )


class RunTemplate(_Model):
    """What every imported PaiPipelineRun gets."""

    labels: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None,
        description="Extra labels.",
        json_schema_extra={
            "maxProperties": 32,
            "x-kubernetes-validations": [
                _cel(
                    f"self.all(k, k.matches('{LABEL_KEY_PATTERN}') && self[k].matches('{LABEL_VALUE_PATTERN}'))",
                    "template.labels must be valid Kubernetes label keys and values",
                ),
                _total_size_rule("template.labels", TEMPLATE_LABELS_MAX_BYTES),
            ],
        },
    )
    annotations: dict[str, Annotated[str, StringConstraints(max_length=TEMPLATE_ANNOTATIONS_MAX_BYTES)]] | None = Field(
        default=None,
        description=f"Extra annotations (at most {TEMPLATE_ANNOTATIONS_MAX_BYTES} bytes, keys and values together).",
        json_schema_extra={
            "maxProperties": 32,
            "x-kubernetes-validations": [
                _cel(
                    f"self.all(k, k.matches('{LABEL_KEY_PATTERN}'))",
                    "template.annotations keys must be valid Kubernetes annotation keys",
                ),
                _total_size_rule("template.annotations", TEMPLATE_ANNOTATIONS_MAX_BYTES),
            ],
        },
    )
    pollInterval: str | None = Field(
        default=None,
        description="spec.pollInterval of imported runs.",
        pattern=DURATION_PATTERN,
        max_length=32,
        json_schema_extra=_duration_between(MIN_POLL_INTERVAL, MAX_POLL_INTERVAL, "template.pollInterval"),
    )

    inside: bool = Field(
        default=False,
        description="Also read each imported run's progress, failure details and outputs (spec.inside): calls PAI "
        "prices, so off unless asked.",
    )

    @field_validator("labels")
    @classmethod
    def _labels_valid(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, label in (value or {}).items():
            if not re.fullmatch(LABEL_KEY_PATTERN, key) or not re.fullmatch(LABEL_VALUE_PATTERN, label):
                raise ValueError(f"template.labels: {key}={label} is not a valid label")
        _check_total_size("template.labels", value, TEMPLATE_LABELS_MAX_BYTES)
        return value

    @field_validator("annotations")
    @classmethod
    def _annotations_valid(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            if not re.fullmatch(LABEL_KEY_PATTERN, key):
                raise ValueError(f"template.annotations: {key} is not a valid annotation key")
        _check_total_size("template.annotations", value, TEMPLATE_ANNOTATIONS_MAX_BYTES)
        return value


class PaiWorkspaceSpec(_Model):
    workspaceId: str = Field(
        description="The PAI workspace to mirror. Immutable.",
        pattern=WORKSPACE_PATTERN,
        max_length=64,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("self == oldSelf", "workspaceId is immutable; create a new PaiWorkspace instead")
            ]
        },
    )
    regionId: str | None = Field(
        default=None,
        description="Region of the workspace, e.g. cn-hangzhou. Defaults to the operator's region.",
        pattern=REGION_PATTERN,
        max_length=64,
    )
    credentialsSecretRef: CredentialsSecretRef | None = Field(
        default=None,
        description="Secret in this namespace with accessKeyId/accessKeySecret[/securityToken], also handed to "
        "every imported run. Default: the operator's own credentials.",
    )
    filters: WorkspaceFilters | None = Field(default=None, description="Which runs to mirror (default: all).")
    importWindow: str = Field(
        default="24h",
        description="Import runs created at most this long ago (a workspace's years of history stay in PAI).",
        pattern=DURATION_PATTERN,
        max_length=32,
        json_schema_extra=_duration_between("1m", MAX_IMPORT_WINDOW, "importWindow"),
    )
    maxRuns: int = Field(
        default=1000,
        ge=0,
        le=MAX_RUNS_LIMIT,
        description="At most this many imported PaiPipelineRuns at a time (the newest runs win).",
    )
    template: RunTemplate | None = Field(default=None, description="Labels, annotations and poll interval.")
    ttlAfterFinished: str | None = Field(
        default=None,
        description="Delete an imported run this long after it ended (unset: keep it while the workspace "
        "exists). Hand-written PaiPipelineRuns are never deleted.",
        pattern=DURATION_PATTERN,
        max_length=32,
        json_schema_extra=_duration_between("0s", MAX_IMPORT_WINDOW, "ttlAfterFinished"),
    )
    suspend: bool = Field(default=False, description="Stop scanning PAI; imported runs stay as they are.")

    @field_validator("importWindow", "ttlAfterFinished")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


class PaiWorkspaceStatus(_Model):
    observedGeneration: int | None = None
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    runs: int | None = Field(default=None, description="Imported PaiPipelineRuns that exist now.")
    counts: dict[str, int] | None = Field(default=None, description="Imported runs by PAI status, as of the last scan.")
    imported: int | None = Field(default=None, description="PaiPipelineRuns created since the workspace was.")
    deleted: int | None = Field(default=None, description="Imported runs deleted after ttlAfterFinished.")
    skipped: int | None = Field(
        default=None, description="Runs the scan saw but did not import (maxRuns reached, name taken)."
    )
    lastScanTime: datetime | None = Field(default=None, description="When PAI was last scanned successfully.")


class PaiWorkspace(_Model):
    """Mirrors the runs of one Alibaba Cloud PAI workspace as PaiPipelineRuns."""

    spec: PaiWorkspaceSpec
    status: PaiWorkspaceStatus | None = Field(default=None, json_schema_extra={"default": {"observedGeneration": 0}})


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Workspace", "type": "string", "jsonPath": ".spec.workspaceId"},
    {"name": "Runs", "type": "integer", "jsonPath": ".status.runs", "description": "Imported runs that exist"},
    {"name": "Running", "type": "integer", "jsonPath": ".status.counts.Running"},
    {"name": "Imported", "type": "integer", "jsonPath": ".status.imported"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the last scan of PAI succeeded",
    },
    {"name": "Last Scan", "type": "date", "jsonPath": ".status.lastScanTime"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Deleted", "type": "integer", "jsonPath": ".status.deleted", "priority": 1},
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
    },
]

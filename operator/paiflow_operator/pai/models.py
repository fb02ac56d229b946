"""Pydantic models of PAI Flow responses (PascalCase on the wire, snake_case in Python)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


class RunStatus(StrEnum):
    """The nine documented PAI run states, three more that PAI's own SDK handles, and UNRECOGNIZED for
    anything PAI adds later."""

    INITIALIZED = "Initialized"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    TERMINATED = "Terminated"
    UNKNOWN = "Unknown"
    SKIPPED = "Skipped"
    TERMINATING = "Terminating"
    # Not in the API reference; PAI's Python SDK (pai/pipeline/run.py) treats them as states before Running.
    READY_TO_SCHEDULE = "ReadyToSchedule"
    STARTING = "Starting"
    WORKFLOW_SERVICE_STARTING = "WorkflowServiceStarting"
    UNRECOGNIZED = "Unrecognized"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TERMINATED, RunStatus.SKIPPED})


def _strip(value: Any) -> Any:
    # The vendor's own sample response carries stray trailing newlines in many string fields.
    return value.strip() if isinstance(value, str) else value


def _utc_or_none(value: Any) -> Any:
    value = _strip(value)
    if value in (None, ""):
        return None
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return value


Text = Annotated[str | None, BeforeValidator(_strip)]
# Identifiers and names are short in PAI; a longer value is a broken answer, not something to store (a status
# the API server refuses to take would leave the resource claiming to be in sync).
ShortText = Annotated[Annotated[str, Field(max_length=1024)] | None, BeforeValidator(_strip)]
# Seconds; anything beyond a century is not a duration PAI measured.
MAX_DURATION_SECONDS = 100 * 365 * 24 * 3600
Timestamp = Annotated[datetime | None, BeforeValidator(_utc_or_none)]


class _PaiModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


def _with_raw_status(data: Any) -> Any:
    # Keep PAI's status text as sent, also for rows nested in list responses (which never pass
    # through from_wire), so an UNRECOGNIZED status can still be shown to the user.
    if isinstance(data, dict) and "RawStatus" not in data and "raw_status" not in data:
        data = {**data, "RawStatus": _strip(data.get("Status")) or ""}
    return data


def _status(value: Any) -> RunStatus:
    value = _strip(value)
    try:
        return RunStatus(value)
    except ValueError:
        return RunStatus.UNRECOGNIZED


class _RunIdentity(_PaiModel):
    """What every run row carries: its id and its status, the latter also exactly as PAI sent it."""

    pipeline_run_id: str = Field(alias="PipelineRunId", min_length=1, max_length=128)
    status: RunStatus = Field(alias="Status")
    # The status exactly as PAI sent it, so an unrecognised value is still shown to the user.
    raw_status: str = Field(default="", alias="RawStatus", max_length=256)
    name: ShortText = Field(default=None, alias="Name")
    node_id: ShortText = Field(default=None, alias="NodeId")

    @field_validator("pipeline_run_id", mode="before")
    @classmethod
    def _strip_id(cls, value: Any) -> Any:
        return _strip(value)

    @field_validator("status", mode="before")
    @classmethod
    def _parse_status(cls, value: Any) -> RunStatus:
        return _status(value)

    @model_validator(mode="before")
    @classmethod
    def _keep_raw_status(cls, data: Any) -> Any:
        return _with_raw_status(data)

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Self:
        return cls.model_validate(body)


class PipelineRun(_RunIdentity):
    """GetPipelineRun's answer (and one row of ListPipelineRuns)."""

    request_id: ShortText = Field(default=None, alias="RequestId")
    message: Text = Field(default=None, alias="Message")
    duration: int | None = Field(default=None, alias="Duration", ge=0, le=MAX_DURATION_SECONDS)
    started_at: Timestamp = Field(default=None, alias="StartedAt")
    finished_at: Timestamp = Field(default=None, alias="FinishedAt")
    gmt_create_time: Timestamp = Field(default=None, alias="GmtCreateTime")
    gmt_modified_time: Timestamp = Field(default=None, alias="GmtModifiedTime")
    pipeline_id: ShortText = Field(default=None, alias="PipelineId")
    workspace_id: ShortText = Field(default=None, alias="WorkspaceId")
    source_type: ShortText = Field(default=None, alias="SourceType")
    source_id: ShortText = Field(default=None, alias="SourceId")
    user_id: ShortText = Field(default=None, alias="UserId")
    parent_user_id: ShortText = Field(default=None, alias="ParentUserId")
    accessibility: ShortText = Field(default=None, alias="Accessibility")
    pipeline_run_uri: ShortText = Field(default=None, alias="PipelineRunUri")
    manifest: Text = Field(default=None, alias="Manifest")
    arguments: Text = Field(default=None, alias="Arguments")
    options: Text = Field(default=None, alias="Options")

    @field_validator("duration", mode="before")
    @classmethod
    def _parse_duration(cls, value: Any) -> Any:
        value = _strip(value)
        if value in (None, ""):
            return None
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError("Duration is not a finite number")
        return int(seconds) if abs(seconds) < 2**63 else seconds  # out of range: refused by the bound


class RunStatusSummary(_RunIdentity):
    """One row of ListPipelineRunsStatus: the status only, no duration, message or timestamps."""

    is_deleted: bool | None = Field(default=None, alias="IsDeleted")


class RunStatusList(_PaiModel):
    request_id: ShortText = Field(default=None, alias="RequestId")
    pipeline_runs: list[RunStatusSummary] = Field(default_factory=list, alias="PipelineRuns")


class RunList(_PaiModel):
    request_id: ShortText = Field(default=None, alias="RequestId")
    total_count: int = Field(default=0, alias="TotalCount")
    pipeline_runs: list[PipelineRun] = Field(default_factory=list, alias="PipelineRuns")


class CreatedRun(_PaiModel):
    """CreatePipelineRun's answer: the new run's id."""

    request_id: Text = Field(default=None, alias="RequestId")
    pipeline_run_id: str = Field(alias="PipelineRunId", min_length=1)

    @field_validator("pipeline_run_id", mode="before")
    @classmethod
    def _strip_id(cls, value: Any) -> Any:
        return _strip(value)


class Acknowledged(_PaiModel):
    """StartPipelineRun's, TerminatePipelineRun's and DeletePipelineRun's answer: a RequestId only."""

    request_id: Text = Field(default=None, alias="RequestId")

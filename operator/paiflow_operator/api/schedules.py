"""The PaiPipelineSchedule API: launched PaiPipelineRuns on a cron schedule, following CronJob's conventions.

Pydantic models of spec and status, the source of truth for its CRD in crds/ (as runs.py is for runs).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from paiflow_operator.api.common import _cel, _Model
from paiflow_operator.api.runs import Condition, PaiPipelineRunSpec
from paiflow_operator.api.workspaces import LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN

KIND = "PaiPipelineSchedule"
PLURAL = "paipipelineschedules"
SINGULAR = "paipipelineschedule"
SHORT_NAMES = ["ppsched"]
CATEGORIES = ["pai"]

# The label every run of a schedule carries (its value: the schedule's name, or a hash of a long one) and the
# annotation with the slot it was made for (CronJob's batch.kubernetes.io/cronjob-scheduled-timestamp).
SCHEDULE_LABEL = "paiflow-operator.dev/schedule"
SCHEDULED_AT_ANNOTATION = "paiflow-operator.dev/scheduled-at"

# CronJob's predefined schedules (robfig/cron's descriptors), as five fields.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _field(value: str, wild: str = r"\*") -> str:
    """One cron field: `*` or a value or range, optionally with a step, comma-separated."""
    stepped = rf"({wild}|({value})(-({value}))?)(/[1-9][0-9]?)?"
    return rf"{stepped}(,{stepped})*"


_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
_DAYS = "SUN|MON|TUE|WED|THU|FRI|SAT"
# A strict regex per field (the API server's CEL cannot parse cron fully; cronsim checks the rest at reconcile,
# e.g. a day that never comes).
CRON_FIELDS = (
    _field(r"[0-5]?[0-9]"),
    _field(r"[01]?[0-9]|2[0-3]"),
    _field(r"0?[1-9]|[12][0-9]|3[01]", r"\*|\?"),
    _field(rf"0?[1-9]|1[0-2]|{_MONTHS}|{_MONTHS.lower()}"),
    _field(rf"[0-7]|{_DAYS}|{_DAYS.lower()}", r"\*|\?"),
)
SCHEDULE_PATTERN = "^(" + "|".join(MACROS) + "|" + r"\s+".join(f"({f})" for f in CRON_FIELDS) + ")$"
# IANA names: Area/Location[/Sub], or UTC, Etc/GMT+5 and the like; whether it exists is checked at reconcile.
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9][A-Za-z0-9_+-]*){0,2}$"

ConcurrencyPolicy = Literal["Allow", "Forbid", "Replace"]


class RunTemplateMetadata(_Model):
    """Labels and annotations every run of the schedule gets (the operator adds its own label and annotation)."""

    labels: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None,
        json_schema_extra={
            "maxProperties": 32,
            "x-kubernetes-validations": [
                _cel(
                    f"self.all(k, k.matches('{LABEL_KEY_PATTERN}') && self[k].matches('{LABEL_VALUE_PATTERN}'))",
                    "runTemplate.metadata.labels must be valid Kubernetes label keys and values",
                )
            ],
        },
    )
    annotations: dict[str, Annotated[str, StringConstraints(max_length=4096)]] | None = Field(
        default=None, json_schema_extra={"maxProperties": 32}
    )

    @field_validator("labels")
    @classmethod
    def _labels_valid(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, label in (value or {}).items():
            if not re.fullmatch(LABEL_KEY_PATTERN, key) or not re.fullmatch(LABEL_VALUE_PATTERN, label):
                raise ValueError(f"runTemplate.metadata.labels: {key}={label} is not a valid label")
        return value


class RunTemplate(_Model):
    """The PaiPipelineRun made for each slot: metadata and a spec that launches a run."""

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("has(self.spec.launch)", "runTemplate.spec needs spec.launch (a schedule starts new runs)")
            ]
        },
    )

    metadata: RunTemplateMetadata | None = None
    spec: PaiPipelineRunSpec = Field(description="A PaiPipelineRun spec with spec.launch.")

    @model_validator(mode="after")
    def _launches(self) -> RunTemplate:
        if self.spec.launch is None:
            raise ValueError("runTemplate.spec needs spec.launch (a schedule starts new runs)")
        return self


class PaiPipelineScheduleSpec(_Model):
    """When to launch (cron, time zone), what (a run template) and what to do when runs overlap."""

    schedule: str = Field(
        description="Cron: five fields (minute hour day-of-month month day-of-week) or @yearly, @monthly, @weekly, "
        "@daily, @hourly.",
        max_length=128,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    f"self.matches('{SCHEDULE_PATTERN}')".replace("\\", "\\\\"),
                    "spec.schedule must be five cron fields (minute 0-59, hour 0-23, day of month 1-31, month 1-12 "
                    "or JAN-DEC, day of week 0-7 or SUN-SAT; *, ranges a-b, steps /n, lists a,b) or one of "
                    "@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly",
                )
            ]
        },
    )
    timeZone: str | None = Field(
        default=None,
        description="IANA time zone the schedule is read in (e.g. Asia/Shanghai). Default: UTC.",
        pattern=TIME_ZONE_PATTERN,
        max_length=64,
    )
    concurrencyPolicy: ConcurrencyPolicy = Field(
        default="Allow",
        description="A slot while a run of this schedule is active: Allow starts another, Forbid skips the slot, "
        "Replace terminates the active run (spec.terminate) and starts the new one.",
    )
    startingDeadlineSeconds: int | None = Field(
        default=None,
        ge=0,
        description="A slot not started within this many seconds of its time is skipped (an Event says so). "
        "Unset: no deadline, but after an outage only the most recent missed slot runs.",
    )
    successfulRunsHistoryLimit: int = Field(default=3, ge=0, description="Succeeded runs kept (oldest deleted).")
    failedRunsHistoryLimit: int = Field(
        default=1, ge=0, description="Failed, Terminated or Skipped runs kept (oldest deleted)."
    )
    suspend: bool = Field(default=False, description="Start no new runs; runs already started go on.")
    runTemplate: RunTemplate

    def expression(self) -> str:
        """The five-field form (a macro expanded)."""
        text = " ".join(self.schedule.split())
        return MACROS.get(text, text)


class ActiveRun(_Model):
    name: str
    uid: str


class PaiPipelineScheduleStatus(_Model):
    """What the schedule has done (written by the operator only)."""

    lastScheduleTime: datetime | None = Field(default=None, description="The slot of the newest run started.")
    lastSkippedTime: datetime | None = Field(
        default=None,
        description="The newest slot skipped (Forbid while a run was active, or missed by more than "
        "startingDeadlineSeconds): never started later.",
    )
    lastSuccessfulTime: datetime | None = Field(default=None, description="When the last succeeded run finished.")
    nextScheduleTime: datetime | None = Field(default=None, description="The next slot (unset while suspended).")
    active: list[ActiveRun] | None = Field(default=None, description="Runs of this schedule not yet ended.")
    activeCount: int | None = Field(default=None, description="len(active), for the ACTIVE column.")
    observedGeneration: int | None = None
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class PaiPipelineSchedule(_Model):
    """Launches a PaiPipelineRun for each slot of a cron schedule (one per slot, never two)."""

    spec: PaiPipelineScheduleSpec
    status: PaiPipelineScheduleStatus | None = None


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
    {"name": "Timezone", "type": "string", "jsonPath": ".spec.timeZone", "priority": 1},
    {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
    {"name": "Active", "type": "integer", "jsonPath": ".status.activeCount", "description": "Runs not ended"},
    {"name": "Last Schedule", "type": "date", "jsonPath": ".status.lastScheduleTime"},
    {"name": "Next", "type": "date", "jsonPath": ".status.nextScheduleTime"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
    },
]

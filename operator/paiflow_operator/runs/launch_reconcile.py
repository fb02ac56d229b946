"""The pure core of launching: what to do next for a PaiPipelineRun with spec.launch, and what to write.

No I/O. The rule that keeps a resource to one PAI run, whatever crashes when:

1. Before any CreatePipelineRun, the intent is written to status (launch.phase Creating, claimedAt) with the
   resource's resourceVersion as a precondition: of two replicas deciding on the same state, one wins.
2. Before any CreatePipelineRun, ListPipelineRuns(WorkspaceId, Name) looks for the run; the run's name ends
   with the resource's uid, so a run found there is this resource's run and is adopted.
3. A create whose outcome is unknown (timeout, lost answer, 5xx, crash) leaves the phase at Creating; the
   next attempt waits until claimedAt + settle (longer than any create can be in flight) and then looks up
   again. Only a definite refusal (4xx) moves the phase to Refused, which may retry at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from paiflow_operator.api.runs import PaiPipelineRunSpec
from paiflow_operator.conditions import (
    NEEDS_HUMAN,
    READY,
    RECONCILING,
    STALLED,
    SUCCEEDED,
    Event,
    parse_timestamp,
    set_condition,
    timestamp,
)
from paiflow_operator.pai.errors import ErrorKind, PaiError
from paiflow_operator.pai.models import PipelineRun
from paiflow_operator.runs.reconcile import Retry, SyncResult, run_status_of

CREATING = "Creating"
REFUSED = "Refused"
CREATED = "Created"
CANCELLED = "Cancelled"  # spec.terminate came before any run was created: none ever will be
# PAI documents no limit for a run name; stay well inside what its console shows.
MAX_RUN_NAME = 128


class Step(StrEnum):
    FOLLOW = "follow"  # nothing to launch: poll PAI as for any run
    ADD_FINALIZER = "add-finalizer"
    REMOVE_FINALIZER = "remove-finalizer"
    CLAIM = "claim"  # record the intent (Creating) under a precondition, then look up, then create
    WAIT = "wait"  # a create may still be in flight: look up only after `at`
    LOOKUP = "lookup"  # deleting while Creating: find the run (to terminate it) without creating one
    TERMINATE = "terminate"
    CANCEL = "cancel"  # terminate asked before a run exists: record that none will be created
    DONE = "done"  # deleting, nothing left to do
    FOLLOW_NOTHING = "follow-nothing"  # cancelled before creation: no run to poll


@dataclass(frozen=True)
class View:
    """What the launcher knows of one resource."""

    name: str
    uid: str
    generation: int
    spec: PaiPipelineRunSpec
    status: Mapping[str, Any]
    deleting: bool
    finalized: bool  # carries our finalizer


@dataclass(frozen=True)
class Decision:
    step: Step
    at: datetime | None = None


def run_name(view: View) -> str:
    """The run's name in PAI: the user's prefix (or the resource name), then the uid that makes it unique."""
    launch = view.spec.launch
    prefix = (launch.name if launch and launch.name else view.name)[: MAX_RUN_NAME - len(view.uid) - 1]
    return f"{prefix}-{view.uid}"


def launch_status(status: Mapping[str, Any]) -> dict[str, Any]:
    return dict(status.get("launch") or {})


def decide(view: View, now: datetime, settle: timedelta) -> Decision:
    spec, status = view.spec, view.status
    if spec.launch is None:
        # Followed by id: never finalized, never terminated (a stray finalizer is only ever removed).
        return Decision(Step.REMOVE_FINALIZER if view.finalized else Step.FOLLOW)
    launch = launch_status(status)
    run_id = status.get("pipelineRunId")
    current = run_status_of(status)
    ended = current is not None and current.is_terminal
    phase = launch.get("phase")
    settled_at = _settled_at(launch, settle)

    if view.deleting:
        if not view.finalized:
            return Decision(Step.DONE)
        if spec.deletionPolicy == "Retain" or ended or launch.get("terminationRequestedAt"):
            return Decision(Step.REMOVE_FINALIZER)
        if run_id:
            return Decision(Step.TERMINATE)
        if phase == CREATING:
            if settled_at is not None and now < settled_at:
                return Decision(Step.WAIT, settled_at)
            return Decision(Step.LOOKUP)
        return Decision(Step.REMOVE_FINALIZER)  # nothing was ever created

    if not run_id and spec.terminate:
        # Terminated before it ran: never create. A create already in flight may have made a run, though:
        # find it (without creating one) and terminate it.
        if phase == CREATING:
            if settled_at is not None and now < settled_at:
                return Decision(Step.WAIT, settled_at)
            return Decision(Step.LOOKUP)
        if phase != CANCELLED:
            return Decision(Step.CANCEL)
        return Decision(Step.REMOVE_FINALIZER if view.finalized else Step.FOLLOW_NOTHING)

    wants_finalizer = spec.deletionPolicy == "Terminate" and not ended
    if wants_finalizer and not view.finalized:
        return Decision(Step.ADD_FINALIZER)  # before the run exists, so that no delete can slip past it
    if view.finalized and not wants_finalizer:
        return Decision(Step.REMOVE_FINALIZER)
    if not run_id:
        if phase == CREATING and settled_at is not None and now < settled_at:
            return Decision(Step.WAIT, settled_at)
        return Decision(Step.CLAIM)
    if spec.terminate and not ended and not launch.get("terminationRequestedAt"):
        return Decision(Step.TERMINATE)
    return Decision(Step.FOLLOW)


def _settled_at(launch: Mapping[str, Any], settle: timedelta) -> datetime | None:
    claimed = parse_timestamp(launch.get("claimedAt"))
    return claimed + settle if claimed is not None else None


def pending(view: View) -> bool:
    """Whether the launcher has work for this resource (the scheduler then wakes it even if its run ended)."""
    # Seen from far in the future every wait is over: what is left is real work.
    step = decide(view, _FAR_FUTURE, timedelta(0)).step
    return step not in (Step.FOLLOW, Step.DONE, Step.FOLLOW_NOTHING)


_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


# ---- what to send -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateRequest:
    workspace_id: str
    name: str
    pipeline_id: str | None
    manifest: str | None
    arguments: str | None
    options: str | None
    accessibility: str | None
    source_id: str


def create_request(view: View, manifest_from_configmap: str | None = None) -> CreateRequest:
    launch = view.spec.launch
    assert launch is not None
    return CreateRequest(
        workspace_id=launch.workspaceId,
        name=run_name(view),
        pipeline_id=launch.pipelineId,
        manifest=launch.manifest if launch.manifest is not None else manifest_from_configmap,
        # PAI takes both documents as JSON text; the resource holds them as structured YAML.
        arguments=_json(launch.arguments),
        options=_json(launch.options),
        accessibility=launch.accessibility,
        source_id=view.uid,
    )


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def find_run(rows: Sequence[PipelineRun], name: str) -> tuple[PipelineRun | None, int]:
    """This resource's run among ListPipelineRuns' rows (PAI's Name filter may match loosely): exact name only.

    Returns the run to adopt (the oldest, should there ever be more than one) and how many matched."""
    mine = [row for row in rows if row.name == name]
    if not mine:
        return None, 0
    mine.sort(key=lambda r: (r.gmt_create_time is None, r.gmt_create_time or _FAR_FUTURE, r.pipeline_run_id))
    return mine[0], len(mine)


# ---- what to write ------------------------------------------------------------------------------


def claim(view: View, now: datetime) -> SyncResult:
    """The intent record, written (under a precondition) before ListPipelineRuns and CreatePipelineRun."""
    launch = launch_status(view.status)
    conditions = [dict(c) for c in view.status.get("conditions") or []]
    message = f"Creating PAI run {run_name(view)} in workspace {view.spec.launch.workspaceId}"  # type: ignore[union-attr]
    _progressing(conditions, CREATING, message, view.generation, now)
    new_launch = {
        **launch,
        "phase": CREATING,
        "runName": run_name(view),
        "claimedAt": timestamp(now),
        "attempts": int(launch.get("attempts") or 0) + 1,
    }
    patch = {"launch": new_launch, "conditions": conditions, "observedGeneration": view.generation}
    events = [] if launch.get("phase") == CREATING else [Event("Normal", CREATING, message)]
    return SyncResult(patch=patch, events=events, retry=Retry.INTERVAL)


def created(view: View, run_id: str, *, adopted: bool, duplicates: int = 1) -> SyncResult:
    launch = launch_status(view.status)
    patch: dict[str, Any] = {
        "pipelineRunId": run_id,
        "launch": {**launch, "phase": CREATED, "runName": run_name(view)},
    }
    if adopted:
        message = (
            f"Found PAI run {run_id} ({run_name(view)}) from an earlier create; following it, not creating another"
        )
        events = [Event("Normal", "Adopted", message)]
    else:
        events = [Event("Normal", CREATED, f"Created PAI run {run_id} ({run_name(view)})")]
    if duplicates > 1:
        events.append(
            Event(
                "Warning",
                "DuplicateRuns",
                f"{duplicates} PAI runs are named {run_name(view)}; following the oldest, {run_id}",
            )
        )
    return SyncResult(patch=patch, events=events, retry=Retry.INTERVAL)


def cancelled(view: View, now: datetime) -> SyncResult:
    """spec.terminate before any run was created: none will be, and the resource reads as terminated."""
    launch = launch_status(view.status)
    conditions = [dict(c) for c in view.status.get("conditions") or []]
    message = "Terminated by spec.terminate before its PAI run was created; no run was created"
    g = view.generation
    set_condition(conditions, READY, "True", "Cancelled", message, g, now)
    set_condition(conditions, SUCCEEDED, "False", "Cancelled", message, g, now)
    set_condition(conditions, RECONCILING, "False", "Cancelled", message, g, now)
    set_condition(conditions, STALLED, "True", "Cancelled", message, g, now)
    patch = {
        "launch": {**launch, "phase": CANCELLED, "runName": run_name(view)},
        "conditions": conditions,
        "observedGeneration": g,
    }
    return SyncResult(patch=patch, events=[Event("Normal", "Cancelled", message)], retry=Retry.STOP)


def terminated(view: View, now: datetime) -> SyncResult:
    launch = launch_status(view.status)
    patch = {"launch": {**launch, "terminationRequestedAt": timestamp(now)}}
    run_id = view.status.get("pipelineRunId")
    events = [Event("Normal", "TerminationRequested", f"PAI accepted TerminatePipelineRun for {run_id}")]
    return SyncResult(patch=patch, events=events, retry=Retry.INTERVAL)


def _progressing(conditions: list[dict[str, Any]], reason: str, message: str, generation: int, now: datetime) -> None:
    set_condition(conditions, RECONCILING, "True", reason, message, generation, now)
    set_condition(conditions, STALLED, "False", reason, message, generation, now)
    # Ready is left alone: it says whether the status is in sync with PAI, and an earlier error stays shown.
    if not any(c.get("type") == SUCCEEDED for c in conditions):
        set_condition(conditions, SUCCEEDED, "Unknown", "Pending", "The PAI run is not created yet", generation, now)


# ---- errors -------------------------------------------------------------------------------------

PERMISSION_PREFIXES = ("Forbidden", "NoPermission")
# PAI answered: it did not create a run. Anything else (5xx, timeouts, garbled answers) leaves it unknown.
DEFINITE_KINDS = frozenset({ErrorKind.THROTTLED, ErrorKind.BAD_REQUEST, ErrorKind.NOT_FOUND, ErrorKind.AUTH})


def error_reason(action: str, error: PaiError, spec: PaiPipelineRunSpec) -> tuple[str, str]:
    """(condition reason, message) for a failed launch-side call; the message names what to fix."""
    detail = error.describe(with_request_id=False)
    code = error.code or ""
    if error.kind is ErrorKind.AUTH and code.startswith(PERMISSION_PREFIXES):
        return "PermissionDenied", f"the operator's RAM identity needs the action paiflow:{action}: {detail}"
    if error.kind is ErrorKind.CREDENTIALS:
        return ("".join(ch for ch in code if ch.isalnum()) or error.kind.value), detail
    if action == "CreatePipelineRun" and spec.launch is not None:
        if error.kind is ErrorKind.NOT_FOUND:
            if "workspace" in code.lower():
                return "WorkspaceNotFound", f"workspace {spec.launch.workspaceId}: {detail}"
            if spec.launch.pipelineId:
                return "PipelineNotFound", f"pipeline {spec.launch.pipelineId}: {detail}"
            return "NotFound", detail
        if error.kind is ErrorKind.BAD_REQUEST:
            return "InvalidLaunch", f"PAI refused spec.launch: {detail}"
        if error.kind not in DEFINITE_KINDS:
            return "CreateUnconfirmed", (
                f"{detail}; the run may or may not exist, so the operator looks it up by name before any new create"
            )
    if action == "TerminatePipelineRun" and error.kind in (ErrorKind.BAD_REQUEST, ErrorKind.NOT_FOUND):
        return "TerminateRefused", detail
    return error.kind.value, detail


def failed(view: View, action: str, error: PaiError, now: datetime) -> SyncResult:
    """Condition + Event for a failed launch-side call, and how soon to retry. The last good status stays."""
    reason, message = error_reason(action, error, view.spec)
    conditions = [dict(c) for c in view.status.get("conditions") or []]
    previous = next((c for c in conditions if c.get("type") == READY), None)
    needs_human = error.kind in NEEDS_HUMAN
    set_condition(conditions, READY, "False", reason, message, view.generation, now)
    if needs_human:
        set_condition(conditions, STALLED, "True", reason, message, view.generation, now)
        set_condition(conditions, RECONCILING, "False", reason, message, view.generation, now)
    patch: dict[str, Any] = {"conditions": conditions, "observedGeneration": view.generation}
    if action == "CreatePipelineRun" and error.kind in DEFINITE_KINDS:
        # PAI said no: no run exists, and the next attempt need not wait for an earlier create to settle.
        patch["launch"] = {**launch_status(view.status), "phase": REFUSED}
    events = []
    if previous is None or previous.get("reason") != reason or previous.get("status") != "False":
        events.append(Event("Warning", reason, f"{action}: {error}"))
    retry = Retry.SLOW if needs_human else Retry.BACKOFF
    return SyncResult(patch=patch, events=events, retry=retry, error_reason=reason)


def configmap_missing(view: View, message: str, now: datetime) -> SyncResult:
    conditions = [dict(c) for c in view.status.get("conditions") or []]
    for type_, value in ((READY, "False"), (STALLED, "True"), (RECONCILING, "False")):
        set_condition(conditions, type_, value, "ManifestUnavailable", message, view.generation, now)
    previous = next((c for c in view.status.get("conditions") or [] if c.get("type") == READY), None)
    events = (
        []
        if previous and previous.get("reason") == "ManifestUnavailable"
        else [Event("Warning", "ManifestUnavailable", message)]
    )
    patch = {"conditions": conditions, "observedGeneration": view.generation}
    return SyncResult(patch=patch, events=events, retry=Retry.SLOW, error_reason="ManifestUnavailable")


__all__ = [
    "CANCELLED",
    "CREATED",
    "CREATING",
    "REFUSED",
    "CreateRequest",
    "Decision",
    "PaiError",
    "Step",
    "View",
    "cancelled",
    "claim",
    "configmap_missing",
    "create_request",
    "created",
    "decide",
    "error_reason",
    "failed",
    "find_run",
    "pending",
    "run_name",
    "terminated",
]

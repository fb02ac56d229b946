"""The pure core of launching: what to do next for a PaiPipelineRun with spec.launch, and what to write.

No I/O. The rule that keeps a resource to one *started* PAI run, whatever crashes when and however late PAI lists
a new run (PAI's CreatePipelineRun has no idempotency token):

1. Claim: with a PAI slot and rate token in hand and ownership re-checked, the intent is written to status
   (launch.phase Creating, claimedAt = now, i.e. right before the request leaves) under the resourceVersion the
   decision was made on: of two replicas deciding on the same state, one wins.
2. Create *unstarted*: CreatePipelineRun with NoConfirmRequired false and SourceId = the resource's uid; the run's
   name ends with the uid too. PAI holds the run in Initialized.
3. Record: the returned id goes into status.pipelineRunId (phase Recorded), conditional on the claim's
   resourceVersion, so only the create that made the claim can record.
4. Start: StartPipelineRun for the recorded id only (phase Started). A run never recorded is never started.

A create whose outcome is unknown (timeout, lost answer, 5xx, crash) leaves phase Creating. Such a create may
have made a run that PAI lists late or never; it is at worst a second, *unstarted* run. So the settle time no
longer guards against a second run, it only saves one: the next attempt waits until claimedAt + settle (a create
in flight answers or times out by then), lists this resource's runs (every page, by SourceId and name), adopts
the one found (or the oldest), and creates again only if none is listed. Every create of unknown outcome is
counted in launch.unconfirmed; while that is above 0 the operator sweeps (the same listing) at growing intervals
(settle, then doubling) for up to the orphan window after the last claim, deleting this resource's runs other
than the recorded one while they are still Initialized (DeletePipelineRun, allowed in that state), with an Event.
Runs whose name and SourceId are not this resource's are never started, deleted or adopted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
from paiflow_operator.pai.models import PipelineRun, RunStatus
from paiflow_operator.runs.reconcile import Retry, SyncResult, run_status_of

CREATING = "Creating"
REFUSED = "Refused"
RECORDED = "Recorded"  # the id is in status.pipelineRunId; StartPipelineRun not confirmed yet
STARTED = "Started"  # PAI accepted StartPipelineRun (or the run was seen past Initialized)
CREATED = "Created"  # written by earlier versions, which created runs started (NoConfirmRequired true)
CANCELLED = "Cancelled"  # spec.terminate came before any run was created: none ever will be
# PAI documents no limit for a run name; stay well inside what its console shows.
MAX_RUN_NAME = 128
DEFAULT_ORPHAN_WINDOW = timedelta(hours=1)


class Step(StrEnum):
    FOLLOW = "follow"  # nothing to launch: poll PAI as for any run
    ADD_FINALIZER = "add-finalizer"
    REMOVE_FINALIZER = "remove-finalizer"
    CLAIM = "claim"  # look up first if a create may have made a run (needs_lookup), then claim, create, record
    WAIT = "wait"  # a create may still be in flight (or a sweep is not due and the run has ended): until `at`
    START = "start"  # the recorded run is not started yet: StartPipelineRun
    SWEEP = "sweep"  # list this resource's runs again: delete unstarted duplicates a lost create made
    LOOKUP = "lookup"  # terminate or delete while Creating: find what a create made, create nothing
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


def unconfirmed(status: Mapping[str, Any]) -> int:
    """Creates sent whose run has not been found (adopted or deleted) yet, the one in flight included."""
    launch = launch_status(status)
    return int(launch.get("unconfirmed") or 0) + (1 if launch.get("phase") == CREATING else 0)


def needs_lookup(view: View) -> bool:
    """Whether a create may have made a run: then ListPipelineRuns comes before any new create."""
    return unconfirmed(view.status) > 0


def started(status: Mapping[str, Any]) -> bool:
    """The recorded run runs (or ran): PAI accepted its start, an earlier version created it started, or PAI
    shows it past Initialized."""
    phase = launch_status(status).get("phase")
    if phase in (STARTED, CREATED):
        return True
    current = run_status_of(status)
    return current is not None and current is not RunStatus.INITIALIZED


def decide(view: View, now: datetime, settle: timedelta, window: timedelta = DEFAULT_ORPHAN_WINDOW) -> Decision:
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
        # find it (without creating one) and delete it (it was never started).
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
        return Decision(Step.TERMINATE)  # also an unstarted one: it is never started then
    if not spec.terminate and not started(status):
        return Decision(Step.START)
    sweep_at = next_sweep(launch, settle, window)
    if sweep_at is not None:
        if now >= sweep_at:
            return Decision(Step.SWEEP)
        if ended:
            return Decision(Step.WAIT, sweep_at)  # nothing to poll any more, only the sweep to come
    return Decision(Step.FOLLOW)


def _settled_at(launch: Mapping[str, Any], settle: timedelta) -> datetime | None:
    claimed = parse_timestamp(launch.get("claimedAt"))
    return claimed + settle if claimed is not None else None


def next_sweep(launch: Mapping[str, Any], settle: timedelta, window: timedelta) -> datetime | None:
    """When to list this resource's runs again for duplicates a create of unknown outcome made, or None.

    Intervals start at the settle time and double (PAI's list lag is unknown, and each look costs a call), up
    to the end of the orphan window after the last claim: the sweep at or after it is the last."""
    if int(launch.get("unconfirmed") or 0) <= 0:
        return None
    claimed = parse_timestamp(launch.get("claimedAt"))
    if claimed is None:
        return _EPOCH  # cannot tell: look now (that writes lookedUpAt)
    last = max(claimed, parse_timestamp(launch.get("lookedUpAt")) or claimed)
    end = claimed + window
    return min(last + max(settle, last - claimed), end) if last < end else last


def pending(view: View) -> bool:
    """Whether the launcher has work for this resource (the scheduler then wakes it even if its run ended)."""
    # Seen from far in the future every wait is over: what is left is real work.
    step = decide(view, _FAR_FUTURE, timedelta(0)).step
    return step not in (Step.FOLLOW, Step.DONE, Step.FOLLOW_NOTHING)


_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


def owned(view: View, run: PipelineRun) -> bool:
    """PAI's own record says this run is this resource's: its name and its SourceId."""
    return run.name == run_name(view) and run.source_id == view.uid


@dataclass(frozen=True)
class Sorting:
    """This resource's runs among ListPipelineRuns' rows, and what to do with each."""

    keep: PipelineRun | None  # the recorded run, or (none recorded) the one to adopt
    delete: tuple[PipelineRun, ...] = ()  # other runs of this resource, never started (Initialized)
    leave: tuple[PipelineRun, ...] = ()  # other runs of this resource already past Initialized: never touched
    foreign: int = 0  # rows that are not this resource's (PAI's filters may match loosely): ignored
    found: int = field(default=0)  # this resource's runs listed (kept, to delete or left)


def sort_out(view: View, rows: Sequence[PipelineRun]) -> Sorting:
    """Adopt the recorded run or, with none recorded, the oldest (one already started first: only an earlier
    version starts at creation); every other still-Initialized run of this resource is a duplicate to delete."""
    recorded = view.status.get("pipelineRunId")
    mine = [row for row in rows if owned(view, row)]
    if recorded:
        keep = next((row for row in mine if row.pipeline_run_id == recorded), None)
        others = [row for row in mine if row.pipeline_run_id != recorded]
    else:
        mine.sort(
            key=lambda r: (
                r.status is RunStatus.INITIALIZED,
                r.gmt_create_time is None,
                r.gmt_create_time or _FAR_FUTURE,
                r.pipeline_run_id,
            )
        )
        keep, others = (mine[0], mine[1:]) if mine else (None, [])
    return Sorting(
        keep=keep,
        delete=tuple(r for r in others if r.status is RunStatus.INITIALIZED),
        leave=tuple(r for r in others if r.status is not RunStatus.INITIALIZED),
        foreign=len(rows) - len(mine),
        found=len(mine),
    )


# ---- what to write ------------------------------------------------------------------------------


def claim(view: View, now: datetime, looked_up: datetime | None = None) -> SyncResult:
    """The intent record, written (under a precondition) right before CreatePipelineRun leaves.

    A create still counted as in flight (phase Creating) that a lookup did not find stays unconfirmed: its run may
    yet be listed, and the sweeps after the launch look for it."""
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
        "unconfirmed": unconfirmed(view.status),
    }
    if looked_up is not None:
        new_launch["lookedUpAt"] = timestamp(looked_up)
    patch = {"launch": new_launch, "conditions": conditions, "observedGeneration": view.generation}
    events = [] if launch.get("phase") == CREATING else [Event("Normal", CREATING, message)]
    return SyncResult(patch=patch, events=events, retry=Retry.INTERVAL)


def recorded(view: View, run: PipelineRun | str, now: datetime) -> SyncResult:
    """The run's id into status, before it is started: a fresh create's answer (``run`` is its id) or a run the
    lookup found (``run`` is its row: adopted, and it accounts for one create of unknown outcome)."""
    launch = launch_status(view.status)
    name = run_name(view)
    if isinstance(run, str):
        run_id, left = run, int(launch.get("unconfirmed") or 0)  # the claim's own create answered
        new_launch = {**launch, "phase": RECORDED, "runName": name, "unconfirmed": left}
        events = [Event("Normal", "Created", f"Created PAI run {run_id} ({name}); it starts once recorded")]
    else:
        run_id, left = run.pipeline_run_id, max(0, unconfirmed(view.status) - 1)
        phase = RECORDED if run.status is RunStatus.INITIALIZED else STARTED
        new_launch = {**launch, "phase": phase, "runName": name, "unconfirmed": left, "lookedUpAt": timestamp(now)}
        events = [
            Event(
                "Normal",
                "Adopted",
                f"Found PAI run {run_id} ({name}, {run.raw_status or run.status.value}) from a create whose answer was "
                "lost; following it, not creating another",
            )
        ]
    patch: dict[str, Any] = {"pipelineRunId": run_id, "launch": new_launch}
    return SyncResult(patch=patch, events=events, retry=Retry.INTERVAL)


def started_run(view: View, *, seen: RunStatus | None = None) -> SyncResult:
    """PAI accepted StartPipelineRun (``seen`` None) or shows the recorded run past Initialized already."""
    launch = launch_status(view.status)
    run_id = view.status.get("pipelineRunId")
    patch = {"launch": {**launch, "phase": STARTED}}
    if seen is None:
        events = [Event("Normal", STARTED, f"Started PAI run {run_id}")]
    else:
        events = [Event("Normal", STARTED, f"PAI run {run_id} is {seen.value}: it was started already")]
    return SyncResult(patch=patch, events=events, retry=Retry.INTERVAL)


def swept(
    view: View,
    now: datetime,
    sorting: Sorting,
    deleted: Sequence[str],
    not_deleted: Sequence[tuple[str, str]] = (),
    window: timedelta = DEFAULT_ORPHAN_WINDOW,
) -> SyncResult:
    """After a look for duplicates: how many creates of unknown outcome are still unaccounted for, and Events
    for what was deleted (never started), left alone (already past Initialized) or could not be deleted."""
    launch = launch_status(view.status)
    left = max(0, int(launch.get("unconfirmed") or 0) - len(deleted) - len(sorting.leave))
    claimed = parse_timestamp(launch.get("claimedAt"))
    if claimed is None or now >= claimed + window:
        left = 0  # the last sweep: a run PAI lists later stays unstarted, and is never ours to start
    patch = {"launch": {**launch, "unconfirmed": left, "lookedUpAt": timestamp(now)}}
    kept = view.status.get("pipelineRunId") or (sorting.keep.pipeline_run_id if sorting.keep else None)
    events = [
        Event(
            "Normal",
            "DuplicateDeleted",
            f"Deleted PAI run {run_id} ({run_name(view)}): a second run made by a create whose answer was lost; it "
            f"was never started. {kept or 'No run'} is this resource's run",
        )
        for run_id in deleted
    ]
    events += [
        Event(
            "Warning",
            "DuplicateRuns",
            f"PAI run {row.pipeline_run_id} is also named {run_name(view)} and is {row.raw_status or row.status.value}"
            f", not Initialized: left alone. {kept or 'No run'} is this resource's run",
        )
        for row in sorting.leave
    ]
    events += [
        Event("Warning", "DuplicateNotDeleted", f"PAI run {run_id} (never started) could not be deleted: {why}")
        for run_id, why in not_deleted
    ]
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
    if action == "StartPipelineRun" and error.kind in (ErrorKind.BAD_REQUEST, ErrorKind.NOT_FOUND):
        return "StartRefused", detail
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

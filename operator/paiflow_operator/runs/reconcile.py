"""The pure reconcile core: (spec, PAI answer or error, current status, now) -> status patch, events, retry.

No I/O happens here, so every PAI status and every error class can be table-tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
    error_reason,
    find_condition,
    parse_timestamp,
    set_condition,
    timestamp,
)
from paiflow_operator.pai.errors import PaiError
from paiflow_operator.pai.models import PipelineRun, RunStatus, RunStatusSummary

REASON_SYNCED = "Synced"
REASON_SUSPENDED = "Suspended"
REASON_PENDING = "Pending"

# A status PAI adds later is still polled, so it reads as in progress rather than done.
IN_PROGRESS = frozenset(
    {
        RunStatus.INITIALIZED,
        RunStatus.READY_TO_SCHEDULE,
        RunStatus.STARTING,
        RunStatus.WORKFLOW_SERVICE_STARTING,
        RunStatus.RUNNING,
        RunStatus.TERMINATING,
        RunStatus.UNKNOWN,
        RunStatus.UNRECOGNIZED,
    }
)
UNSUCCESSFUL = frozenset({RunStatus.FAILED, RunStatus.TERMINATED, RunStatus.SKIPPED})
# Fields that move on every poll (PAI may bump GmtModifiedTime on every read of a running run): written only
# along with a real change or a heartbeat.
VOLATILE_FIELDS = frozenset({"requestId", "lastSyncTime", "modifiedAt"})
TEXT_FIELDS = ("manifest", "arguments", "options")
MAX_RUN_STATUS = 64


class Retry(StrEnum):
    INTERVAL = "interval"  # poll again after the poll interval
    BACKOFF = "backoff"  # a transient failure: capped exponential backoff
    SLOW = "slow"  # needs a human: try again rarely
    STOP = "stop"  # terminal or suspended: no more PAI calls until the spec changes


@dataclass(frozen=True)
class SyncResult:
    patch: dict[str, Any] | None
    events: list[Event] = field(default_factory=list)
    retry: Retry = Retry.INTERVAL
    error_reason: str | None = None  # set when this sync failed: the Ready=False reason


@dataclass(frozen=True)
class Policy:
    heartbeat_interval: timedelta = timedelta(minutes=10)
    max_text_field_bytes: int = 64 * 1024
    # A retryable PAI error (5xx, throttling, timeout, a garbled answer) is only written to the resource once
    # it has lasted this long: a blip costs no write and no Event, a real outage still shows.
    error_grace: timedelta = timedelta(0)


Observation = PipelineRun | RunStatusSummary | PaiError


def truncate_utf8(text: str, limit: int) -> tuple[str, bool]:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", errors="ignore"), True


def reason_for(run_status: RunStatus, raw: str) -> str:
    """A condition or Event reason: the RunStatus name, or PAI's own value for one this operator does not know
    (made to fit metav1.Condition's reason syntax)."""
    if run_status is not RunStatus.UNRECOGNIZED:
        return run_status.value
    cleaned = "".join(ch for ch in raw if ch.isascii() and (ch.isalnum() or ch == "_"))[:MAX_RUN_STATUS]
    return cleaned if cleaned[:1].isalpha() else "Unrecognized"


def run_status_of(status: Mapping[str, Any]) -> RunStatus | None:
    raw = status.get("runStatus")
    if raw is None:
        return None
    try:
        return RunStatus(raw)
    except ValueError:
        return RunStatus.UNRECOGNIZED


def is_finished(status: Mapping[str, Any], generation: int | None) -> bool:
    """Terminal and already synced for this generation: nothing left to ask PAI."""
    current = run_status_of(status)
    return current is not None and current.is_terminal and status.get("observedGeneration") == generation


def _run_conditions(
    conditions: list[dict[str, Any]],
    run_status: RunStatus,
    raw: str,
    message: str,
    generation: int,
    now: datetime,
) -> None:
    detail = f"PAI run is {raw}" + (f": {message}" if message else "")
    reason = reason_for(run_status, raw)
    if run_status is RunStatus.SUCCEEDED:
        set_condition(conditions, SUCCEEDED, "True", "Succeeded", detail, generation, now)
    elif run_status in UNSUCCESSFUL:
        set_condition(conditions, SUCCEEDED, "False", reason, detail, generation, now)
    else:
        set_condition(conditions, SUCCEEDED, "Unknown", reason, detail, generation, now)
    in_progress = "True" if run_status in IN_PROGRESS else "False"
    set_condition(conditions, RECONCILING, in_progress, reason, detail, generation, now)
    stalled = "True" if run_status in UNSUCCESSFUL else "False"
    set_condition(conditions, STALLED, stalled, reason, detail, generation, now)


def _fields_from_run(run: PipelineRun, spec: PaiPipelineRunSpec, policy: Policy) -> dict[str, Any]:
    fields: dict[str, Any] = {
        # Mirrored for followed runs too, so that one printer column shows the run id of both kinds.
        "pipelineRunId": run.pipeline_run_id,
        "runStatus": (run.raw_status or run.status.value)[:MAX_RUN_STATUS],
        "message": truncate_utf8(run.message, policy.max_text_field_bytes)[0] if run.message else None,
        # A running run's Duration grows on every poll; a stale number would mislead more than none
        # (the Started column already shows the elapsed time), so it is mirrored once the run has ended.
        "duration": run.duration if run.status.is_terminal else None,
        "startedAt": timestamp(run.started_at),
        "finishedAt": timestamp(run.finished_at),
        "createdAt": timestamp(run.gmt_create_time),
        "modifiedAt": timestamp(run.gmt_modified_time),
        "name": run.name,
        "pipelineId": run.pipeline_id,
        "workspaceId": run.workspace_id,
        "nodeId": run.node_id,
        "sourceType": run.source_type,
        "sourceId": run.source_id,
        "userId": run.user_id,
        "accessibility": run.accessibility,
        "pipelineRunUri": run.pipeline_run_uri,
        "requestId": run.request_id,
    }
    truncated: list[str] = []
    for name in TEXT_FIELDS:
        value = getattr(run, name) if spec.verbose else None
        if value is not None:
            value, cut = truncate_utf8(value, policy.max_text_field_bytes)
            if cut:
                truncated.append(name)
        fields[name] = value
    fields["truncatedFields"] = truncated or None
    return fields


def _differs(current: Mapping[str, Any], desired: Mapping[str, Any], keys: set[str]) -> bool:
    return any(current.get(k) != desired.get(k) for k in keys)


def _heartbeat_due(current: Mapping[str, Any], now: datetime, policy: Policy) -> bool:
    last = parse_timestamp(current.get("lastSyncTime"))
    return last is None or now - last >= policy.heartbeat_interval


def reconcile(
    spec: PaiPipelineRunSpec,
    generation: int,
    current: Mapping[str, Any],
    observation: Observation,
    now: datetime,
    policy: Policy = Policy(),
    failing_for: timedelta = timedelta(0),
) -> SyncResult:
    """Computes what to write after one look at PAI. ``current`` is the resource's status as stored;
    ``failing_for`` is how long this run's calls have been failing with retryable errors."""
    conditions = [dict(c) for c in current.get("conditions") or []]
    events: list[Event] = []
    previous_run_status = current.get("runStatus")
    previous_ready = find_condition(conditions, READY)

    if isinstance(observation, PaiError):
        return _on_error(spec, generation, current, conditions, observation, now, policy, failing_for)

    desired: dict[str, Any]
    if isinstance(observation, PipelineRun):
        desired = _fields_from_run(observation, spec, policy)
        run_status, raw = observation.status, desired["runStatus"]
        message = observation.message or ""
    else:
        # A batched answer carries the status only; the rest of the status stays as it was.
        desired = {
            "runStatus": (observation.raw_status or observation.status.value)[:MAX_RUN_STATUS],
            "pipelineRunId": observation.pipeline_run_id,
        }
        run_status, raw = observation.status, desired["runStatus"]
        message = current.get("message") or ""

    set_condition(conditions, READY, "True", REASON_SYNCED, "Status is in sync with PAI", generation, now)
    _run_conditions(conditions, run_status, raw, message, generation, now)

    if raw != previous_run_status:
        events.append(
            Event(
                type="Warning" if run_status in UNSUCCESSFUL else "Normal",
                reason=reason_for(run_status, raw),
                message=f"PAI run {observation.pipeline_run_id} is {raw}" + (f": {message}" if message else ""),
            )
        )
    if previous_ready is not None and previous_ready.get("status") != "True":
        events.append(Event("Normal", "Recovered", f"In sync with PAI again after {previous_ready.get('reason')}"))

    significant = set(desired) - VOLATILE_FIELDS
    changed = (
        _differs(current, desired, significant)
        or conditions != (current.get("conditions") or [])
        or current.get("observedGeneration") != generation
    )
    retry = Retry.STOP if run_status.is_terminal else Retry.INTERVAL
    if not changed and not _heartbeat_due(current, now, policy):
        return SyncResult(patch=None, events=events, retry=retry)
    patch = {**desired, "observedGeneration": generation, "conditions": conditions}
    patch["lastSyncTime"] = timestamp(now)
    return SyncResult(patch=_only_changes(current, patch), events=events, retry=retry)


def _on_error(
    spec: PaiPipelineRunSpec,
    generation: int,
    current: Mapping[str, Any],
    conditions: list[dict[str, Any]],
    error: PaiError,
    now: datetime,
    policy: Policy,
    failing_for: timedelta,
) -> SyncResult:
    # The last good status is kept: only conditions (and observedGeneration) change.
    reason = error_reason(error)
    previous = find_condition(conditions, READY)
    in_sync = previous is not None and previous.get("status") == "True"
    if (
        error.retryable
        and in_sync
        and failing_for < policy.error_grace
        and current.get("observedGeneration") == generation
    ):
        # Within the grace: retried quietly, the resource still says what was last confirmed.
        return SyncResult(patch=None, retry=Retry.BACKOFF, error_reason=reason)
    # The condition leaves out PAI's RequestId, new on every retry, so that a repeated error writes nothing;
    # the Event carries it for support cases.
    message = error.describe(with_request_id=False)
    previous_ready = find_condition(conditions, READY)
    set_condition(conditions, READY, "False", reason, message, generation, now)
    needs_human = error.kind in NEEDS_HUMAN
    if needs_human:
        set_condition(conditions, STALLED, "True", reason, message, generation, now)
        set_condition(conditions, RECONCILING, "False", reason, message, generation, now)
    events: list[Event] = []
    if previous_ready is None or previous_ready.get("reason") != reason:
        events.append(Event("Warning", reason, str(error)))
    if find_condition(conditions, SUCCEEDED) is None:
        set_condition(conditions, SUCCEEDED, "Unknown", REASON_PENDING, "Not yet read from PAI", generation, now)
    patch = {"observedGeneration": generation, "conditions": conditions, **_followed_id(spec)}
    retry = Retry.SLOW if needs_human else Retry.BACKOFF
    return SyncResult(patch=_only_changes(current, patch), events=events, retry=retry, error_reason=reason)


def suspended(spec: PaiPipelineRunSpec, generation: int, current: Mapping[str, Any], now: datetime) -> SyncResult:
    """spec.suspend: no PAI calls, and the resource reads as suspended rather than progressing.

    Ready is True (reason Suspended): the resource is as its spec asks. kstatus (Flux, kubectl-based tooling)
    falls back to Ready when neither Reconciling nor Stalled is True, so Ready=False would read as InProgress
    for ever; this way a suspended run reads Current (a failed one stays Failed through Stalled), as a PAI run
    in PAI's own Suspended state does. Argo CD's health check shows it as Suspended.
    """
    conditions = [dict(c) for c in current.get("conditions") or []]
    message = "Polling is suspended by spec.suspend; the last known status is kept"
    set_condition(conditions, READY, "True", REASON_SUSPENDED, message, generation, now)
    set_condition(conditions, RECONCILING, "False", REASON_SUSPENDED, message, generation, now)
    if find_condition(conditions, STALLED) is None:
        set_condition(conditions, STALLED, "False", REASON_SUSPENDED, message, generation, now)
    events = []
    previous_ready = find_condition(list(current.get("conditions") or []), READY)
    if previous_ready is None or previous_ready.get("reason") != REASON_SUSPENDED:
        events.append(Event("Normal", REASON_SUSPENDED, message))
    patch = {"observedGeneration": generation, "conditions": conditions, **_followed_id(spec)}
    return SyncResult(patch=_only_changes(current, patch), events=events, retry=Retry.STOP)


def restore_conditions(
    spec: PaiPipelineRunSpec, generation: int, current: Mapping[str, Any], now: datetime
) -> SyncResult:
    """Conditions are derived data: a finished run's follow from its runStatus and message (and spec.suspend).

    Someone else's edit of them (a forged Succeeded=True on a failed run, a condition removed or added) is put
    back from what the operator wrote, with no PAI call; conditions of other types are dropped. The caller makes
    sure runStatus itself is the operator's (else PAI is asked first, as for any foreign terminal status).
    """
    old = [dict(c) for c in current.get("conditions") or []]
    conditions = [c for c in old if c.get("type") in (READY, SUCCEEDED, RECONCILING, STALLED)]
    run_status = run_status_of(current) or RunStatus.UNRECOGNIZED
    raw = str(current.get("runStatus") or "")
    set_condition(conditions, READY, "True", REASON_SYNCED, "Status is in sync with PAI", generation, now)
    _run_conditions(conditions, run_status, raw, current.get("message") or "", generation, now)
    if spec.suspend:
        message = "Polling is suspended by spec.suspend; the last known status is kept"
        set_condition(conditions, READY, "True", REASON_SUSPENDED, message, generation, now)
        set_condition(conditions, RECONCILING, "False", REASON_SUSPENDED, message, generation, now)
    order = (READY, SUCCEEDED, RECONCILING, STALLED)  # as reconcile first writes them
    conditions.sort(key=lambda c: order.index(c["type"]))
    if conditions == old:
        return SyncResult(patch=None, retry=Retry.STOP)
    event = Event(
        "Warning",
        "ConditionsRestored",
        "status.conditions were changed by someone other than the operator; restored from status.runStatus",
    )
    return SyncResult(patch={"conditions": conditions}, events=[event], retry=Retry.STOP)


def _followed_id(spec: PaiPipelineRunSpec) -> dict[str, Any]:
    """A followed run's id goes to status with the first write of any kind: the RUN ID column reads status."""
    return {"pipelineRunId": spec.pipelineRunId} if spec.pipelineRunId else {}


def _only_changes(current: Mapping[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch holding just what differs (None deletes a field that is now absent)."""
    out = {k: v for k, v in patch.items() if current.get(k) != v}
    out = {k: v for k, v in out.items() if not (v is None and current.get(k) is None)}
    return out or None


def backoff_delay(attempt: int, base: timedelta, cap: timedelta) -> timedelta:
    """Capped exponential backoff before jitter: base, 2*base, 4*base, ... up to cap."""
    delay: timedelta = base * (2 ** max(attempt - 1, 0))
    return min(delay, cap)

"""Pure: what a PaiPipelineSchedule does now (spec, status, its runs, the time) -> runs to create, terminate, delete.

The slot rule is CronJob's (pkg/controller/cronjob/utils.go, mostRecentScheduleTime): the slots owed are
those after the newest one handled (lastScheduleTime, or lastSkippedTime, or the newest run's slot); of them
only the most recent runs, so an outage of any length costs at most one catch-up run, never a burst. That slot,
if older than startingDeadlineSeconds, is skipped with an Event and recorded (CronJob moves its earliest slot
to now - startingDeadlineSeconds instead, which skips silently). Unlike CronJob, a slot Forbid skips is skipped
for good (recorded in lastSkippedTime): CronJob would start it late once the active run ends.

Time zones are zoneinfo's; cronsim follows Debian's cron over DST changes: a slot inside a spring-forward gap
runs at the first minute after it, and a slot inside a fall-back overlap runs once. cronsim rather than
croniter: small, no dependencies, zoneinfo-native, reverse iteration (the most recent slot in one step), written
for a cron monitoring service (Healthchecks) and kept; croniter's maintainer announced its end in late 2024
(removal from PyPI in March 2025) before others took it over.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from paiflow_operator.api.schedules import SCHEDULED_AT_ANNOTATION, PaiPipelineScheduleSpec
from paiflow_operator.conditions import Event, parse_timestamp, set_condition, timestamp

# A slot counted as missed beyond this number is reported as "more than" it (CronJob warns past 100 too).
MAX_MISSED_COUNTED = 100
MAX_NAME = 63  # a run's name is also the prefix of its PAI run name and a label value elsewhere: DNS label size

Outcome = Literal["active", "succeeded", "failed"]
ENDED_FAILED = frozenset({"Failed", "Terminated", "Skipped"})


@dataclass(frozen=True)
class OwnedRun:
    """A PaiPipelineRun this schedule controls, reduced to what the plan needs."""

    name: str
    uid: str
    scheduled_at: datetime | None
    outcome: Outcome
    finished_at: datetime | None = None
    terminating: bool = False
    created_at: datetime | None = None

    @property
    def order(self) -> datetime:
        return self.scheduled_at or self.created_at or datetime.min.replace(tzinfo=UTC)


def owned_run_from_body(body: Mapping[str, Any]) -> OwnedRun:
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    run_status = status.get("runStatus")
    launch_phase = (status.get("launch") or {}).get("phase")
    outcome: Outcome = "active"
    if run_status == "Succeeded":
        outcome = "succeeded"
    elif run_status in ENDED_FAILED or launch_phase == "Cancelled":
        outcome = "failed"
    annotations = meta.get("annotations") or {}
    return OwnedRun(
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        scheduled_at=parse_timestamp(annotations.get(SCHEDULED_AT_ANNOTATION)),
        outcome=outcome,
        finished_at=parse_timestamp(status.get("finishedAt")) or parse_timestamp(status.get("lastSyncTime")),
        terminating=bool(spec.get("terminate")),
        created_at=parse_timestamp(meta.get("creationTimestamp")),
    )


def run_name(schedule: str, slot: datetime) -> str:
    """`<schedule>-<slot in unix minutes>` (CronJob's `<cronjob>-<minutes>`), at most 63 characters: a long
    schedule name is cut and a hash of the whole name added, so two schedules never share a run name."""
    suffix = str(int(slot.timestamp()) // 60)
    name = f"{schedule}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(schedule.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 2
    return f"{schedule[:keep].rstrip('-.')}-{digest}-{suffix}"


class ScheduleError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def time_zone(spec: PaiPipelineScheduleSpec) -> ZoneInfo:
    name = spec.timeZone or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError("InvalidTimeZone", f"spec.timeZone {name!r} is not a known IANA time zone") from None


def _cron(spec: PaiPipelineScheduleSpec, start: datetime, reverse: bool = False) -> CronSim:
    # robfig/cron (CronJob) reads `?` as `*`; cronsim does not know it.
    expression = spec.expression().replace("?", "*")
    try:
        return CronSim(expression, start, reverse=reverse)
    except CronSimError as exc:
        raise ScheduleError("InvalidSchedule", f"spec.schedule {spec.schedule!r}: {exc}") from None


def next_slot(spec: PaiPipelineScheduleSpec, after: datetime) -> datetime | None:
    """The first slot strictly after `after` (UTC in, UTC out); None if none comes within cronsim's horizon."""
    local = after.astimezone(time_zone(spec))
    try:
        return next(_cron(spec, local)).astimezone(UTC)
    except StopIteration:
        return None


def most_recent_slot(spec: PaiPipelineScheduleSpec, now: datetime) -> datetime | None:
    """The newest slot at or before `now`."""
    local = now.astimezone(time_zone(spec)) + timedelta(microseconds=1)
    try:
        return next(_cron(spec, local, reverse=True)).astimezone(UTC)
    except StopIteration:
        return None


def count_slots(spec: PaiPipelineScheduleSpec, after: datetime, until: datetime, limit: int) -> int:
    """Slots in (after, until], counted up to `limit`."""
    local = after.astimezone(time_zone(spec))
    slots = itertools.takewhile(lambda t: t.astimezone(UTC) <= until, _cron(spec, local))
    return sum(1 for _ in itertools.islice(slots, limit))


@dataclass(frozen=True)
class Skip:
    slot: datetime
    reason: Literal["Forbid", "MissedDeadline"]


@dataclass
class Plan:
    create: datetime | None = None  # the slot to make a run for
    create_name: str | None = None
    missed: int = 0  # slots owed before the one created (or skipped), counted up to MAX_MISSED_COUNTED
    skip: Skip | None = None
    terminate: list[OwnedRun] = field(default_factory=list)
    delete: list[OwnedRun] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requeue_at: datetime | None = None
    error: ScheduleError | None = None


def plan(
    name: str,
    generation: int,
    created: datetime,
    spec: PaiPipelineScheduleSpec,
    status: Mapping[str, Any],
    runs: Iterable[OwnedRun],
    now: datetime,
) -> Plan:
    """Decides everything for one schedule at `now`; the controller applies it (creates first, then status)."""
    runs = list(runs)
    out = Plan()
    conditions = [dict(c) for c in status.get("conditions") or []]
    active = sorted((r for r in runs if r.outcome == "active"), key=lambda r: r.order)
    last_scheduled = parse_timestamp(status.get("lastScheduleTime"))
    last_skipped = parse_timestamp(status.get("lastSkippedTime"))
    out.delete = _history(runs, spec)
    deleted = {r.uid for r in out.delete}
    kept_runs = [r for r in runs if r.uid not in deleted]
    newest_run_slot = max((r.scheduled_at for r in runs if r.scheduled_at is not None), default=None)
    handled = max((t for t in (last_scheduled, last_skipped, newest_run_slot) if t is not None), default=None)
    try:
        nxt = None if spec.suspend else next_slot(spec, now)
        if not spec.suspend:
            _decide(out, name, spec, created, handled, active, now)
    except ScheduleError as exc:
        out.error = exc
        set_condition(conditions, "Ready", "False", exc.reason, str(exc), generation, now)
        set_condition(conditions, "Stalled", "True", exc.reason, str(exc), generation, now)
        out.status = _status(status, generation, conditions, kept_runs, active, None, None, None)
        return out
    if spec.suspend:
        message = "Suspended by spec.suspend: no new runs"
        set_condition(conditions, "Ready", "True", "Suspended", message, generation, now)
    else:
        message = f"Next run at {timestamp(nxt)}" if nxt else "The schedule has no slot within 50 years"
        set_condition(conditions, "Ready", "True", "Scheduled", message, generation, now)
    reason = "Suspended" if spec.suspend else "Scheduled"
    set_condition(conditions, "Stalled", "False", reason, message, generation, now)
    scheduled = out.create if out.create is not None else last_scheduled
    skipped = out.skip.slot if out.skip is not None else last_skipped
    out.status = _status(status, generation, conditions, kept_runs, active, scheduled, skipped, nxt)
    out.requeue_at = nxt
    return out


def _decide(
    out: Plan,
    name: str,
    spec: PaiPipelineScheduleSpec,
    created: datetime,
    handled: datetime | None,
    active: list[OwnedRun],
    now: datetime,
) -> None:
    earliest = handled if handled is not None and handled > created else created
    deadline = spec.startingDeadlineSeconds
    slot = most_recent_slot(spec, now)
    if slot is None or slot <= earliest:
        return
    out.missed = count_slots(spec, earliest, slot, MAX_MISSED_COUNTED + 2) - 1
    if out.missed > 0:
        more = "more than " if out.missed > MAX_MISSED_COUNTED else ""
        out.events.append(
            Event(
                "Warning",
                "MissedSchedules",
                f"{more}{min(out.missed, MAX_MISSED_COUNTED)} earlier slots were missed (the operator was not running "
                f"or the schedule was suspended); only the most recent one, {timestamp(slot)}, runs now",
            )
        )
    if deadline is not None and slot + timedelta(seconds=deadline) < now:
        out.skip = Skip(slot, "MissedDeadline")
        out.events.append(
            Event(
                "Warning",
                "MissedSchedule",
                f"Missed the slot {timestamp(slot)} by more than startingDeadlineSeconds ({deadline}); skipped",
            )
        )
        return
    if active and spec.concurrencyPolicy == "Forbid":
        out.skip = Skip(slot, "Forbid")
        names = ", ".join(r.name for r in active)
        out.events.append(
            Event("Normal", "RunAlreadyActive", f"Skipped the slot {timestamp(slot)}: {names} still active (Forbid)")
        )
        return
    if active and spec.concurrencyPolicy == "Replace":
        out.terminate = [r for r in active if not r.terminating]
    out.create = slot
    out.create_name = run_name(name, slot)


def _history(runs: list[OwnedRun], spec: PaiPipelineScheduleSpec) -> list[OwnedRun]:
    """Ended runs beyond the history limits, oldest first, per outcome."""
    doomed: list[OwnedRun] = []
    for outcome, limit in (("succeeded", spec.successfulRunsHistoryLimit), ("failed", spec.failedRunsHistoryLimit)):
        ended = sorted((r for r in runs if r.outcome == outcome), key=lambda r: r.order)
        doomed.extend(ended[: max(len(ended) - limit, 0)])
    return doomed


def _status(
    status: Mapping[str, Any],
    generation: int,
    conditions: list[dict[str, Any]],
    runs: list[OwnedRun],
    active: list[OwnedRun],
    scheduled: datetime | None,
    skipped: datetime | None,
    nxt: datetime | None,
) -> dict[str, Any]:
    succeeded = [r.finished_at for r in runs if r.outcome == "succeeded" and r.finished_at is not None]
    last_success = max((t for t in (parse_timestamp(status.get("lastSuccessfulTime")), *succeeded) if t), default=None)
    return {
        "observedGeneration": generation,
        "conditions": conditions,
        "active": [{"name": r.name, "uid": r.uid} for r in active] or None,
        "activeCount": len(active),
        "lastScheduleTime": timestamp(scheduled) if scheduled else None,
        "lastSkippedTime": timestamp(skipped) if skipped else None,
        "lastSuccessfulTime": timestamp(last_success) if last_success else None,
        "nextScheduleTime": timestamp(nxt) if nxt else None,
    }

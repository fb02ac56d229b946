"""The schedule's pure core: slots (CronJob's missed-slot rule), concurrency, history, names, time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paiflow_operator.api.schedules import SCHEDULE_PATTERN, PaiPipelineScheduleSpec
from paiflow_operator.schedules import plan as P
from paiflow_operator.schedules.plan import OwnedRun, ScheduleError

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)  # created at
LAUNCH = {"launch": {"workspaceId": "1", "pipelineId": "p-1"}}


def spec(schedule: str = "* * * * *", **kw: Any) -> PaiPipelineScheduleSpec:
    return PaiPipelineScheduleSpec.model_validate({"schedule": schedule, "runTemplate": {"spec": LAUNCH}, **kw})


def ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def run(minute: int, outcome: P.Outcome = "active", **kw: Any) -> OwnedRun:
    slot = T0 + timedelta(minutes=minute)
    return OwnedRun(f"s-{minute}", f"uid-{minute}", slot, outcome, finished_at=slot + timedelta(seconds=30), **kw)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize(
    ("case", "status", "runs", "now", "create", "missed"),
    [
        ("before the first slot", {}, [], at(0.5), None, 0),
        ("first slot", {}, [], at(1), at(1), 0),
        ("first slot, a little late", {}, [], at(1.2), at(1), 0),
        ("slot already handled", {"lastScheduleTime": ts(at(1))}, [], at(1.5), None, 0),
        ("next slot", {"lastScheduleTime": ts(at(1))}, [], at(2), at(2), 0),
        # The status write after a create was lost: the run's own slot says the slot is handled.
        ("status lost, run exists", {}, [run(1)], at(1.5), None, 0),
        # An outage of 50 slots: one catch-up run, the most recent slot, never a burst.
        ("outage", {"lastScheduleTime": ts(at(1))}, [], at(51.5), at(51), 49),
        ("long outage", {"lastScheduleTime": ts(at(1))}, [], at(60 * 24), at(60 * 24), 101),
        ("skipped slot stays skipped", {"lastSkippedTime": ts(at(3))}, [], at(3.5), None, 0),
    ],
)
def test_slots(
    case: str, status: dict[str, Any], runs: list[OwnedRun], now: datetime, create: datetime | None, missed: int
) -> None:
    out = P.plan("s", 1, T0, spec(), status, runs, now)
    assert out.create == create, case
    assert out.missed == missed, case
    assert out.create_name == (None if create is None else f"s-{int(create.timestamp()) // 60}")
    assert out.requeue_at == P.next_slot(spec(), now)
    if missed:
        (event,) = [e for e in out.events if e.reason == "MissedSchedules"]
        assert ("more than 100" in event.message) == (missed > 100)


def test_starting_deadline_skips_a_late_slot_with_an_event() -> None:
    s = spec(startingDeadlineSeconds=30)
    # 40 s after the slot: beyond the deadline. The slot is skipped, recorded, and never run later.
    out = P.plan("s", 1, T0, s, {"lastScheduleTime": ts(at(1))}, [], at(2) + timedelta(seconds=40))
    assert out.create is None and out.skip is not None and out.skip.reason == "MissedDeadline"
    assert out.status["lastSkippedTime"] == ts(at(2))
    assert [e.reason for e in out.events] == ["MissedSchedule"]
    later = P.plan("s", 1, T0, s, out.status, [], at(2) + timedelta(seconds=50))
    assert later.create is None and later.skip is None and not later.events
    # Within the deadline it runs; after an outage, the most recent slot runs if it is within the deadline.
    assert P.plan("s", 1, T0, s, {"lastScheduleTime": ts(at(1))}, [], at(2.4)).create == at(2)
    out = P.plan("s", 1, T0, s, {"lastScheduleTime": ts(at(1))}, [], at(30.2))
    assert out.create == at(30) and out.missed == 28


@pytest.mark.parametrize(
    ("policy", "create", "terminated", "skip"),
    [("Allow", True, [], None), ("Forbid", False, [], "Forbid"), ("Replace", True, ["s-1"], None)],
)
def test_concurrency(policy: str, create: bool, terminated: list[str], skip: str | None) -> None:
    status = {"lastScheduleTime": ts(at(1))}
    out = P.plan("s", 1, T0, spec(concurrencyPolicy=policy), status, [run(1)], at(2))
    assert (out.create == at(2)) is create
    assert [r.name for r in out.terminate] == terminated
    assert (out.skip.reason if out.skip else None) == skip
    if skip:
        assert out.status["lastSkippedTime"] == ts(at(2)) and out.status["lastScheduleTime"] == ts(at(1))
        assert [e.reason for e in out.events] == ["RunAlreadyActive"]
    assert out.status["active"] == [{"name": "s-1", "uid": "uid-1"}] and out.status["activeCount"] == 1


def test_replace_does_not_terminate_twice_and_ended_runs_are_not_active() -> None:
    status = {"lastScheduleTime": ts(at(1))}
    runs = [run(0, "succeeded"), run(1, terminating=True)]
    out = P.plan("s", 1, T0, spec(concurrencyPolicy="Replace"), status, runs, at(2))
    assert out.create == at(2) and out.terminate == []
    # Forbid with only ended runs: nothing blocks.
    out = P.plan("s", 1, T0, spec(concurrencyPolicy="Forbid"), status, [run(0, "failed")], at(2))
    assert out.create == at(2)


def test_history_limits_delete_the_oldest_per_outcome() -> None:
    runs = [run(m, "succeeded") for m in (5, 1, 3, 4, 2)] + [run(m, "failed") for m in (7, 6, 8)] + [run(9)]
    out = P.plan("s", 1, T0, spec(successfulRunsHistoryLimit=2, failedRunsHistoryLimit=1), {}, runs, at(9.5))
    assert [r.name for r in out.delete] == ["s-1", "s-2", "s-3", "s-6", "s-7"]
    assert out.status["lastSuccessfulTime"] == ts(at(5) + timedelta(seconds=30))
    assert [r.name for r in P.plan("s", 1, T0, spec(), {}, runs, at(9.5)).delete] == ["s-1", "s-2", "s-6", "s-7"]


def test_suspend_makes_nothing_and_has_no_next_time() -> None:
    out = P.plan("s", 1, T0, spec(suspend=True), {"lastScheduleTime": ts(at(1))}, [], at(5))
    assert out.create is None and out.requeue_at is None and out.status["nextScheduleTime"] is None
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Suspended"
    # Unsuspended much later: one run, the most recent slot.
    out = P.plan("s", 2, T0, spec(), {"lastScheduleTime": ts(at(1))}, [], at(90.5))
    assert out.create == at(90) and out.missed == 88


@pytest.mark.parametrize(
    ("schedule", "tz", "reason"),
    [("* * * * *", "Mars/Olympus_Mons", "InvalidTimeZone"), ("0 0 31 2 *", None, "InvalidSchedule")],
)
def test_invalid_schedule_or_time_zone_is_a_condition(schedule: str, tz: str | None, reason: str) -> None:
    out = P.plan("s", 3, T0, spec(schedule, timeZone=tz), {}, [], at(5))
    assert out.create is None and out.requeue_at is None and isinstance(out.error, ScheduleError)
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("False", reason, 3)


def test_time_zones_and_dst() -> None:
    ny = spec("30 2 * * *", timeZone="America/New_York")
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT; the 02:30 slot runs once, at 03:00 EDT (07:00 UTC), as Debian cron.
    assert P.next_slot(ny, datetime(2026, 3, 7, 12, tzinfo=UTC)) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    assert P.next_slot(ny, datetime(2026, 3, 8, 7, 0, tzinfo=UTC)) == datetime(2026, 3, 9, 6, 30, tzinfo=UTC)
    # 2026-11-01: 01:30 happens twice; the slot runs once.
    fall = spec("30 1 * * *", timeZone="America/New_York")
    first = P.next_slot(fall, datetime(2026, 10, 31, 12, tzinfo=UTC))
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert first is not None and P.next_slot(fall, first) == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)
    sh = spec("0 2 * * *", timeZone="Asia/Shanghai")
    assert P.most_recent_slot(sh, datetime(2026, 3, 1, 19, tzinfo=UTC)) == datetime(2026, 3, 1, 18, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@weekly", "0 0 * * 0"), ("0  2 * *  *", "0 2 * * *")],
)
def test_macros(schedule: str, expected: str) -> None:
    assert spec(schedule).expression() == expected


def test_run_names_are_bounded_and_unique() -> None:
    slot = at(1)
    assert P.run_name("nightly", slot) == f"nightly-{int(slot.timestamp()) // 60}"
    long_a, long_b = "a" * 70 + "x", "a" * 70 + "y"
    names = {P.run_name(n, slot) for n in (long_a, long_b, "a" * 60)}
    assert len(names) == 3 and all(len(n) <= 63 for n in names)
    assert P.run_name(long_a, slot) != P.run_name(long_a, at(2))


@pytest.mark.parametrize(
    ("schedule", "valid"),
    [
        ("*/5 0-6 1,15 JAN-MAR MON-FRI", True),
        ("0 0 ? * 1", True),
        ("@yearly", True),
        ("60 * * * *", False),
        ("0 24 * * *", False),
        ("* * * *", False),
        ("*/0 * * * *", False),
        ("@every 5m", False),
    ],
)
def test_schedule_pattern(schedule: str, valid: bool) -> None:
    import re

    assert bool(re.fullmatch(SCHEDULE_PATTERN, schedule)) is valid


def test_owned_run_from_body() -> None:
    body = {
        "metadata": {
            "name": "s-1",
            "uid": "u",
            "annotations": {"paiflow-operator.dev/scheduled-at": ts(at(1))},
            "creationTimestamp": ts(at(1)),
        },
        "spec": {"terminate": True},
        "status": {"runStatus": "Terminated", "finishedAt": ts(at(2))},
    }
    owned = P.owned_run_from_body(body)
    assert (owned.outcome, owned.scheduled_at, owned.terminating, owned.finished_at) == ("failed", at(1), True, at(2))
    cancelled = {"metadata": {"name": "x"}, "status": {"launch": {"phase": "Cancelled"}}}
    assert P.owned_run_from_body(cancelled).outcome == "failed"
    assert P.owned_run_from_body({"metadata": {"name": "y"}, "status": {"runStatus": "Running"}}).outcome == "active"

"""Fault selection: scope (action, run), call budgets, time windows, precedence."""

from __future__ import annotations

from paiflow_emulator import Fault, FaultKind
from paiflow_emulator.faults import FaultSet

T0 = 1_000.0
GET = "GetPipelineRun"
LIST = "ListPipelineRunsStatus"


def test_no_faults_selects_nothing() -> None:
    selection = FaultSet().select(GET, ["r1"], T0)
    assert selection.fault is None
    assert selection.delay == 0.0
    assert not selection.hidden


def test_count_limits_the_fault_to_the_next_n_calls() -> None:
    faults = FaultSet()
    fault = faults.add(Fault(FaultKind.UNAVAILABLE, count=2))
    assert faults.select(GET, ["r1"], T0).fault is fault
    assert faults.select(GET, ["r2"], T0).fault is fault
    assert faults.select(GET, ["r1"], T0).fault is None
    assert fault.hits == 2
    assert len(faults) == 0  # spent faults are dropped


def test_run_scoped_fault_only_hits_that_run() -> None:
    faults = FaultSet()
    faults.add(Fault(FaultKind.INTERNAL, run_id="r1"))
    assert faults.select(GET, ["r2"], T0).fault is None
    selected = faults.select(GET, ["r1"], T0).fault
    assert selected is not None and selected.kind is FaultKind.INTERNAL
    # A batch call that includes the run fails as a whole.
    assert faults.select(LIST, ["r0", "r1"], T0, multi=True).fault is not None


def test_action_scoped_fault() -> None:
    faults = FaultSet()
    faults.add(Fault(FaultKind.THROTTLE, action=LIST))
    assert faults.select(GET, ["r1"], T0).fault is None
    assert faults.select(LIST, ["r1"], T0, multi=True).fault is not None


def test_time_window_uses_the_given_clock() -> None:
    faults = FaultSet()
    faults.add(Fault(FaultKind.UNAVAILABLE, start=T0 + 10, until=T0 + 20))
    assert faults.select(GET, [], T0 + 9.9).fault is None
    assert faults.select(GET, [], T0 + 10).fault is not None
    assert faults.select(GET, [], T0 + 19.9).fault is not None
    assert faults.select(GET, [], T0 + 20).fault is None


def test_latency_faults_add_up_and_do_not_decide_the_outcome() -> None:
    faults = FaultSet()
    faults.add(Fault(FaultKind.LATENCY, delay=0.2))
    faults.add(Fault(FaultKind.LATENCY, delay=0.3, run_id="r1"))
    selection = faults.select(GET, ["r1"], T0)
    assert selection.fault is None
    assert selection.delay == 0.5


def test_first_outcome_fault_wins_and_only_it_is_used_up() -> None:
    faults = FaultSet()
    first = faults.add(Fault(FaultKind.THROTTLE, count=1, delay=0.1))
    second = faults.add(Fault(FaultKind.INTERNAL, count=1))
    selection = faults.select(GET, ["r1"], T0)
    assert selection.fault is first
    assert selection.delay == 0.1
    assert second.hits == 0
    assert faults.select(GET, ["r1"], T0).fault is second


def test_run_scoped_not_found_hides_the_run_in_list_calls() -> None:
    faults = FaultSet()
    faults.add(Fault(FaultKind.NOT_FOUND, run_id="r2"))
    selection = faults.select(LIST, ["r1", "r2"], T0, multi=True)
    assert selection.fault is None
    assert selection.hidden == frozenset({"r2"})
    single = faults.select(GET, ["r2"], T0)
    assert single.fault is not None and single.fault.kind is FaultKind.NOT_FOUND


def test_default_errors_and_overrides() -> None:
    unavailable = Fault(FaultKind.UNAVAILABLE).error()
    assert (unavailable.status, unavailable.code) == (503, "ServiceUnavailable")
    assert Fault(FaultKind.INTERNAL).error().code == "InternalError"
    assert Fault(FaultKind.INTERNAL).error().status == 500
    throttle = Fault(FaultKind.THROTTLE).error()
    assert (throttle.status, throttle.code) == (400, "Throttling.User")
    assert Fault(FaultKind.THROTTLE, status=429).error().status == 429
    assert Fault(FaultKind.NOT_FOUND).error().status == 404
    creds = Fault(FaultKind.BAD_CREDENTIALS).error()
    assert (creds.status, creds.code) == (404, "InvalidAccessKeyId.NotFound")
    custom = Fault(FaultKind.ERROR, status=502, code="BadGateway", message="upstream").error()
    assert (custom.status, custom.code, custom.message) == (502, "BadGateway", "upstream")


def test_from_json_relative_window_and_round_trip() -> None:
    fault = Fault.from_json(
        {"kind": "throttle", "runId": "r1", "count": 3, "after": 5, "duration": 10, "retryAfterMs": 200}, now=T0
    )
    assert (fault.kind, fault.run_id, fault.count) == (FaultKind.THROTTLE, "r1", 3)
    assert (fault.start, fault.until) == (T0 + 5, T0 + 15)
    assert fault.retry_after_ms == 200
    as_json = fault.to_json()
    assert as_json["kind"] == "throttle"
    assert as_json["id"] == fault.fault_id
    open_ended = Fault.from_json({"kind": "hang", "duration": 2}, now=T0)
    assert (open_ended.start, open_ended.until) == (None, T0 + 2)


def test_remove_and_clear() -> None:
    faults = FaultSet()
    a = faults.add(Fault(FaultKind.HANG))
    faults.add(Fault(FaultKind.MALFORMED))
    assert faults.remove(a.fault_id) is True
    assert faults.remove(a.fault_id) is False
    assert [f.kind for f in faults.list()] == [FaultKind.MALFORMED]
    faults.clear()
    assert faults.list() == []

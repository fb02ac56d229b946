"""The pure launch core: every decision from (spec, status, deletion, finalizer, clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paiflow_operator.api.runs import PaiPipelineRunSpec
from paiflow_operator.pai.errors import AuthError, BadRequestError, NotFoundError, ServerError, ThrottledError
from paiflow_operator.pai.models import PipelineRun
from paiflow_operator.runs import launch_reconcile as core
from paiflow_operator.runs.reconcile import Retry

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SETTLE = timedelta(seconds=60)
UID = "6f1c2f4e-0000-4000-8000-000000000001"


def view(
    status: dict[str, Any] | None = None, *, deleting: bool = False, finalized: bool = False, **spec: Any
) -> core.View:
    body = {"launch": {"workspaceId": "24601", "pipelineId": "pipeline-a"}, **spec}
    return core.View("train", UID, 1, PaiPipelineRunSpec.model_validate(body), status or {}, deleting, finalized)


def creating(seconds_ago: float) -> dict[str, Any]:
    claimed = (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"launch": {"phase": "Creating", "runName": f"train-{UID}", "claimedAt": claimed, "attempts": 1}}


def test_a_new_launch_claims_first() -> None:
    assert core.decide(view(), NOW, SETTLE).step is core.Step.CLAIM


def test_a_create_of_unknown_outcome_is_looked_up_only_after_it_settles() -> None:
    decision = core.decide(view(creating(10)), NOW, SETTLE)
    assert decision.step is core.Step.WAIT and decision.at == NOW + timedelta(seconds=50)
    assert core.decide(view(creating(61)), NOW, SETTLE).step is core.Step.CLAIM


def test_a_refused_create_may_retry_at_once() -> None:
    status = creating(1)
    status["launch"]["phase"] = "Refused"
    assert core.decide(view(status), NOW, SETTLE).step is core.Step.CLAIM


def test_terminate_policy_adds_the_finalizer_before_anything_is_created() -> None:
    assert core.decide(view(deletionPolicy="Terminate"), NOW, SETTLE).step is core.Step.ADD_FINALIZER
    assert core.decide(view(deletionPolicy="Terminate", finalized=True), NOW, SETTLE).step is core.Step.CLAIM


def test_followed_runs_are_never_finalized_or_terminated() -> None:
    spec = PaiPipelineRunSpec.model_validate({"pipelineRunId": "flow-abc"})
    followed = core.View("f", UID, 1, spec, {"runStatus": "Running"}, False, False)
    assert core.decide(followed, NOW, SETTLE).step is core.Step.FOLLOW
    assert not core.pending(followed)


@pytest.mark.parametrize(
    ("status", "spec", "deleting", "finalized", "step"),
    [
        ({"pipelineRunId": "flow-1", "runStatus": "Running"}, {}, False, False, core.Step.FOLLOW),
        ({"pipelineRunId": "flow-1", "runStatus": "Running"}, {"terminate": True}, False, False, core.Step.TERMINATE),
        (
            {"pipelineRunId": "flow-1", "runStatus": "Terminating", "launch": {"terminationRequestedAt": "x"}},
            {"terminate": True},
            False,
            False,
            core.Step.FOLLOW,
        ),
        ({"pipelineRunId": "flow-1", "runStatus": "Succeeded"}, {"terminate": True}, False, False, core.Step.FOLLOW),
        (
            {"pipelineRunId": "flow-1", "runStatus": "Running"},
            {"deletionPolicy": "Terminate"},
            True,
            True,
            core.Step.TERMINATE,
        ),
        (
            {"pipelineRunId": "flow-1", "runStatus": "Running"},
            {"deletionPolicy": "Retain"},
            True,
            True,
            core.Step.REMOVE_FINALIZER,
        ),
        (
            {"pipelineRunId": "flow-1", "runStatus": "Failed"},
            {"deletionPolicy": "Terminate"},
            True,
            True,
            core.Step.REMOVE_FINALIZER,
        ),
        (
            {"pipelineRunId": "flow-1", "runStatus": "Succeeded"},
            {"deletionPolicy": "Terminate"},
            False,
            True,
            core.Step.REMOVE_FINALIZER,
        ),
        ({}, {"deletionPolicy": "Terminate"}, True, True, core.Step.REMOVE_FINALIZER),
        ({}, {}, True, False, core.Step.DONE),
    ],
)
def test_decisions(
    status: dict[str, Any], spec: dict[str, Any], deleting: bool, finalized: bool, step: core.Step
) -> None:
    assert core.decide(view(status, deleting=deleting, finalized=finalized, **spec), NOW, SETTLE).step is step


def test_deleting_while_creating_looks_the_run_up_after_it_settles() -> None:
    v = view(creating(5), deleting=True, finalized=True, deletionPolicy="Terminate")
    assert core.decide(v, NOW, SETTLE).step is core.Step.WAIT
    v = view(creating(120), deleting=True, finalized=True, deletionPolicy="Terminate")
    assert core.decide(v, NOW, SETTLE).step is core.Step.LOOKUP


def row(
    run_id: str, status: str = "Initialized", *, name: str | None = None, source: str = UID, created: int = 9
) -> Any:
    return PipelineRun.model_validate(
        {
            "PipelineRunId": run_id,
            "Status": status,
            "Name": f"train-{UID}" if name is None else name,
            "SourceId": source,
            "GmtCreateTime": f"2026-01-01T{created:02d}:00:00Z",
        }
    )


def test_run_name_ends_with_the_uid() -> None:
    v = view(launch={"workspaceId": "1", "pipelineId": "p", "name": "resnet"})
    assert core.run_name(v) == f"resnet-{UID}"


def test_sort_out_adopts_the_oldest_and_deletes_only_this_resources_unstarted_runs() -> None:
    rows = [
        row("flow-b", created=10),
        row("flow-a", created=9),
        row("flow-c", "Running", created=11),  # someone started it (or an earlier version did): never touched
        row("flow-near", name=f"train-{UID}-other"),  # PAI's Name filter may match loosely
        row("flow-alien", source="another-uid"),  # same name, not this resource's SourceId
        row("flow-nosource", source=""),
    ]
    sorting = core.sort_out(view(creating(100)), rows)
    # A run already past Initialized is adopted first: deleting or duplicating a running run is worse.
    assert sorting.keep is not None and sorting.keep.pipeline_run_id == "flow-c"
    assert [r.pipeline_run_id for r in sorting.delete] == ["flow-a", "flow-b"]
    assert sorting.leave == () and sorting.foreign == 3 and sorting.found == 3
    only_unstarted = core.sort_out(view(creating(100)), rows[:2])
    assert only_unstarted.keep is not None and only_unstarted.keep.pipeline_run_id == "flow-a"
    assert [r.pipeline_run_id for r in only_unstarted.delete] == ["flow-b"]
    assert core.sort_out(view(creating(100)), rows[3:]) == core.Sorting(keep=None, foreign=3)


def test_sort_out_keeps_the_recorded_run_even_when_older_ones_exist() -> None:
    status = {"pipelineRunId": "flow-b", "launch": {"phase": "Started", "unconfirmed": 2}}
    sorting = core.sort_out(view(status), [row("flow-a", created=8), row("flow-b"), row("flow-c", "Running")])
    assert sorting.keep is not None and sorting.keep.pipeline_run_id == "flow-b"
    assert [r.pipeline_run_id for r in sorting.delete] == ["flow-a"]
    assert [r.pipeline_run_id for r in sorting.leave] == ["flow-c"]
    # The recorded run not listed yet (list lag): every other run of this resource is still a duplicate.
    lagging = core.sort_out(view(status), [row("flow-a")])
    assert lagging.keep is None and [r.pipeline_run_id for r in lagging.delete] == ["flow-a"]


def at(seconds: float) -> str:
    return (NOW + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def launched(phase: str, *, unconfirmed: int = 0, looked: float | None = None, **status: Any) -> dict[str, Any]:
    launch: dict[str, Any] = {"phase": phase, "runName": f"train-{UID}", "claimedAt": at(-10), "attempts": 1}
    if unconfirmed:
        launch["unconfirmed"] = unconfirmed
    if looked is not None:
        launch["lookedUpAt"] = at(looked)
    return {"pipelineRunId": "flow-1", "launch": launch, **status}


WINDOW = timedelta(minutes=10)


@pytest.mark.parametrize(
    ("state", "status", "spec", "step", "lookup", "wait_until"),
    [
        ("no claim yet", {}, {}, core.Step.CLAIM, False, None),
        ("claimed, create in flight or outcome unknown", creating(10), {}, core.Step.WAIT, True, 50),
        ("claimed, outcome unknown, settled: look, then create", creating(61), {}, core.Step.CLAIM, True, None),
        (
            "refused, nothing unconfirmed: create at once",
            {"launch": {"phase": "Refused"}},
            {},
            core.Step.CLAIM,
            False,
            None,
        ),
        (
            "refused after an earlier unknown outcome: look first",
            {"launch": {"phase": "Refused", "unconfirmed": 1}},
            {},
            core.Step.CLAIM,
            True,
            None,
        ),
        ("recorded, not started", launched("Recorded"), {}, core.Step.START, False, None),
        (
            "recorded, start in flight or unknown",
            launched("Recorded", runStatus="Initialized"),
            {},
            core.Step.START,
            False,
            None,
        ),
        (
            "recorded, PAI shows it running: started",
            launched("Recorded", runStatus="Running"),
            {},
            core.Step.FOLLOW,
            False,
            None,
        ),
        ("started", launched("Started", runStatus="Running"), {}, core.Step.FOLLOW, False, None),
        ("created started by an earlier version", launched("Created"), {}, core.Step.FOLLOW, False, None),
        (
            "recorded, terminate asked: never started",
            launched("Recorded"),
            {"terminate": True},
            core.Step.TERMINATE,
            False,
            None,
        ),
        (
            "started, a lost create may have left a duplicate, sweep not due",
            launched("Started", unconfirmed=1, runStatus="Running"),
            {},
            core.Step.FOLLOW,
            True,
            None,
        ),
        (
            "started, list lag beyond the settle time: sweep due",
            launched("Started", unconfirmed=1, runStatus="Running"),
            {},
            core.Step.SWEEP,
            True,
            None,
        ),
        (
            "run ended, duplicates still unaccounted for: wait for the sweep",
            launched("Started", unconfirmed=1, looked=50, runStatus="Succeeded"),
            {},
            core.Step.WAIT,
            True,
            110,
        ),
    ],
)
def test_protocol_states(
    state: str,
    status: dict[str, Any],
    spec: dict[str, Any],
    step: core.Step,
    lookup: bool,
    wait_until: float | None,
) -> None:
    v = view(status, **spec)
    now = NOW + timedelta(seconds=60) if "sweep due" in state else NOW
    decision = core.decide(v, now, SETTLE, WINDOW)
    assert decision.step is step, state
    assert core.needs_lookup(v) is lookup, state
    if wait_until is not None:
        assert decision.at == NOW + timedelta(seconds=wait_until), state
    assert core.pending(v) is (step not in (core.Step.FOLLOW,) or lookup), state


def test_sweeps_double_from_the_settle_time_and_end_with_the_window() -> None:
    launch = launched("Started", unconfirmed=1)["launch"]  # claimed at NOW - 10s
    assert core.next_sweep(launch, SETTLE, WINDOW) == NOW + timedelta(seconds=50)  # claimed + settle
    swept_at = [core.next_sweep({**launch, "lookedUpAt": at(s)}, SETTLE, WINDOW) for s in (50, 110, 230, 470)]
    # Each interval is the time since the claim: +60, +120, +240, +480 ... capped by the window (claimed + 600s).
    assert swept_at == [NOW + timedelta(seconds=s) for s in (110, 230, 470, 590)]
    assert core.next_sweep({**launch, "lookedUpAt": at(590)}, SETTLE, WINDOW) == NOW + timedelta(seconds=590)
    assert core.next_sweep({**launch, "unconfirmed": 0}, SETTLE, WINDOW) is None


def test_a_sweep_accounts_for_what_it_found_and_the_last_one_gives_up() -> None:
    status = launched("Started", unconfirmed=2)
    sorting = core.sort_out(view(status), [row("flow-1"), row("flow-2"), row("flow-3", "Running")])
    result = core.swept(view(status), NOW, sorting, ["flow-2"], window=WINDOW)
    assert result.patch is not None and result.patch["launch"]["unconfirmed"] == 0
    assert result.patch["launch"]["lookedUpAt"] == at(0)
    assert [(e.type, e.reason) for e in result.events] == [("Normal", "DuplicateDeleted"), ("Warning", "DuplicateRuns")]
    assert "flow-2" in result.events[0].message and "never started" in result.events[0].message
    nothing = core.sort_out(view(status), [])
    assert core.swept(view(status), NOW, nothing, [], window=WINDOW).patch["launch"]["unconfirmed"] == 2  # type: ignore[index]
    late = NOW + WINDOW
    assert core.swept(view(status), late, nothing, [], window=WINDOW).patch["launch"]["unconfirmed"] == 0  # type: ignore[index]
    failed = core.swept(view(status), NOW, sorting, [], [("flow-2", "PermissionDenied")], window=WINDOW)
    assert failed.patch["launch"]["unconfirmed"] == 1  # type: ignore[index]
    assert failed.events[-1].reason == "DuplicateNotDeleted"


def test_recording_a_fresh_create_or_an_adopted_run() -> None:
    claimed = core.claim(view(creating(100)), NOW).patch
    assert claimed is not None and claimed["launch"]["unconfirmed"] == 1  # the earlier create is still unknown
    after_claim = view({"launch": claimed["launch"]})
    fresh = core.recorded(after_claim, "flow-9", NOW)
    assert fresh.patch is not None and fresh.patch["pipelineRunId"] == "flow-9"
    assert fresh.patch["launch"]["phase"] == "Recorded" and fresh.patch["launch"]["unconfirmed"] == 1
    assert [e.reason for e in fresh.events] == ["Created"]
    adopted = core.recorded(view(creating(100)), row("flow-1"), NOW)
    assert adopted.patch is not None and adopted.patch["launch"]["phase"] == "Recorded"
    assert adopted.patch["launch"]["unconfirmed"] == 0 and [e.reason for e in adopted.events] == ["Adopted"]
    running = core.recorded(view(creating(100)), row("flow-1", "Running"), NOW)
    assert running.patch is not None and running.patch["launch"]["phase"] == "Started"
    start = core.started_run(view(launched("Recorded")))
    assert start.patch == {"launch": {**launched("Recorded")["launch"], "phase": "Started"}}
    assert core.started_run(view(launched("Recorded")), seen=core.RunStatus.RUNNING).events[0].reason == "Started"


def test_claim_records_intent_and_counts_attempts() -> None:
    result = core.claim(view(creating(100)), NOW)
    assert result.patch is not None
    assert result.patch["launch"]["phase"] == "Creating" and result.patch["launch"]["attempts"] == 2
    assert result.patch["launch"]["claimedAt"] == "2026-01-01T12:00:00Z"
    assert result.events == []  # a re-claim says nothing new
    assert [e.reason for e in core.claim(view(), NOW).events] == ["Creating"]


def test_create_request_sends_structured_yaml_as_json_text() -> None:
    v = view(launch={"workspaceId": "1", "pipelineId": "p", "arguments": {"b": 1, "a": [1, 2]}, "options": {"x": True}})
    request = core.create_request(v)
    assert request.arguments == '{"a":[1,2],"b":1}' and request.options == '{"x":true}'
    assert request.source_id == UID and request.name.endswith(UID)


@pytest.mark.parametrize(
    ("error", "reason", "retry", "phase"),
    [
        (NotFoundError("x", code="PipelineNotExist"), "PipelineNotFound", Retry.SLOW, "Refused"),
        (NotFoundError("x", code="WorkspaceNotExist"), "WorkspaceNotFound", Retry.SLOW, "Refused"),
        (BadRequestError("Arguments is not valid", code="InvalidParameter"), "InvalidLaunch", Retry.SLOW, "Refused"),
        (AuthError("denied", code="Forbidden.RAM", http_status=403), "PermissionDenied", Retry.SLOW, "Refused"),
        (ThrottledError("slow down", code="Throttling.User"), "Throttled", Retry.BACKOFF, "Refused"),
        (ServerError("oops", code="InternalError", http_status=500), "CreateUnconfirmed", Retry.BACKOFF, "Creating"),
    ],
)
def test_create_errors(error: Exception, reason: str, retry: Retry, phase: str) -> None:
    assert isinstance(error, core.PaiError)
    result = core.failed(view(creating(0)), "CreatePipelineRun", error, NOW)
    assert result.error_reason == reason and result.retry is retry
    assert result.patch is not None
    assert result.patch.get("launch", {"phase": "Creating"})["phase"] == phase
    assert [e.reason for e in result.events] == [reason]
    ready = next(c for c in result.patch["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == reason
    if reason == "PermissionDenied":
        assert "paiflow:CreatePipelineRun" in ready["message"]


def test_terminate_before_any_run_exists_cancels_without_creating() -> None:
    assert core.decide(view(terminate=True), NOW, SETTLE).step is core.Step.CANCEL
    cancelled = {"launch": {"phase": "Cancelled", "runName": "x"}}
    assert core.decide(view(cancelled, terminate=True), NOW, SETTLE).step is core.Step.FOLLOW_NOTHING
    assert not core.pending(view(cancelled, terminate=True))
    # A create may be in flight: wait for it to settle, then look (never create) so as to terminate what it made.
    assert core.decide(view(creating(5), terminate=True), NOW, SETTLE).step is core.Step.WAIT
    assert core.decide(view(creating(120), terminate=True), NOW, SETTLE).step is core.Step.LOOKUP
    result = core.cancelled(view(terminate=True), NOW)
    assert result.patch is not None and result.patch["launch"]["phase"] == "Cancelled"
    succeeded = next(c for c in result.patch["conditions"] if c["type"] == "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("False", "Cancelled")

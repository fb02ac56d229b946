"""The pure reconcile core, table-driven: every PAI status, every error class, write-only-what-changed.

The PAI answers are built from the vendor's documented GetPipelineRun sample, so the field mapping is
checked against the shape PAI really sends (stray newlines included).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from paiflow_operator.api.runs import PaiPipelineRunSpec
from paiflow_operator.conditions import Event, timestamp
from paiflow_operator.pai.errors import (
    AuthError,
    BadRequestError,
    CredentialsError,
    MalformedResponseError,
    NotFoundError,
    PaiError,
    ServerError,
    ThrottledError,
    TransportError,
)
from paiflow_operator.pai.models import PipelineRun, RunStatusSummary
from paiflow_operator.runs.reconcile import (
    Policy,
    Retry,
    SyncResult,
    backoff_delay,
    is_finished,
    reconcile,
    restore_conditions,
    suspended,
    truncate_utf8,
)

SAMPLE_PATH = Path(__file__).parent / "data" / "get_pipeline_run_sample.json"
RUN_ID = "flow-j94y0000000000lf7a"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
POLICY = Policy(heartbeat_interval=timedelta(minutes=10), max_text_field_bytes=64 * 1024)
# The message the vendor sample carries (after stripping its stray newline).
SAMPLE_MESSAGE = "error message"


def sample_wire(**overrides: Any) -> dict[str, Any]:
    """The vendor sample with a valid run id (the sample's is masked with '*') and the given overrides."""
    wire: dict[str, Any] = json.loads(SAMPLE_PATH.read_text(encoding="utf-8"))
    wire["PipelineRunId"] = RUN_ID
    wire.update(overrides)
    return wire


def pai_run(status: str = "Running", **overrides: Any) -> PipelineRun:
    return PipelineRun.from_wire(sample_wire(Status=status, **overrides))


def summary(status: str) -> RunStatusSummary:
    return RunStatusSummary.from_wire({"PipelineRunId": RUN_ID, "Status": status})


def make_spec(**fields: Any) -> PaiPipelineRunSpec:
    return PaiPipelineRunSpec(pipelineRunId=RUN_ID, **fields)


def merged(current: Mapping[str, Any], patch: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the API server stores after a JSON merge patch of the status (null deletes a field)."""
    out = dict(current)
    for key, value in (patch or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in status.get("conditions") or [] if c["type"] == type_]
    assert len(found) == 1, f"expected exactly one {type_} condition in {status.get('conditions')}"
    return dict(found[0])


def settle(
    observation: PipelineRun | RunStatusSummary | PaiError,
    current: Mapping[str, Any] | None = None,
    *,
    spec: PaiPipelineRunSpec | None = None,
    generation: int = 1,
    now: datetime = T0,
    policy: Policy = POLICY,
) -> tuple[SyncResult, dict[str, Any]]:
    """One reconcile, returning the result and the status as stored after its patch."""
    current = dict(current or {})
    result = reconcile(spec or make_spec(), generation, current, observation, now, policy)
    return result, merged(current, result.patch)


# ---- every PAI status ------------------------------------------------------------------------------

# status sent by PAI -> runStatus shown, Succeeded, Reconciling, Stalled (status, reason), retry, event
STATUS_TABLE = [
    ("Initialized", "Initialized", ("Unknown", "Initialized"), ("True", "Initialized"), ("False", "Initialized"),
     Retry.INTERVAL, ("Normal", "Initialized")),
    ("Running", "Running", ("Unknown", "Running"), ("True", "Running"), ("False", "Running"),
     Retry.INTERVAL, ("Normal", "Running")),
    ("Succeeded", "Succeeded", ("True", "Succeeded"), ("False", "Succeeded"), ("False", "Succeeded"),
     Retry.STOP, ("Normal", "Succeeded")),
    ("Failed", "Failed", ("False", "Failed"), ("False", "Failed"), ("True", "Failed"),
     Retry.STOP, ("Warning", "Failed")),
    ("Suspended", "Suspended", ("Unknown", "Suspended"), ("False", "Suspended"), ("False", "Suspended"),
     Retry.INTERVAL, ("Normal", "Suspended")),
    ("Terminated", "Terminated", ("False", "Terminated"), ("False", "Terminated"), ("True", "Terminated"),
     Retry.STOP, ("Warning", "Terminated")),
    ("Unknown", "Unknown", ("Unknown", "Unknown"), ("True", "Unknown"), ("False", "Unknown"),
     Retry.INTERVAL, ("Normal", "Unknown")),
    ("Skipped", "Skipped", ("False", "Skipped"), ("False", "Skipped"), ("True", "Skipped"),
     Retry.STOP, ("Warning", "Skipped")),
    ("Terminating", "Terminating", ("Unknown", "Terminating"), ("True", "Terminating"), ("False", "Terminating"),
     Retry.INTERVAL, ("Normal", "Terminating")),
    # Not documented, but handled by PAI's own SDK: states before Running.
    ("ReadyToSchedule", "ReadyToSchedule", ("Unknown", "ReadyToSchedule"), ("True", "ReadyToSchedule"),
     ("False", "ReadyToSchedule"), Retry.INTERVAL, ("Normal", "ReadyToSchedule")),
    ("Starting", "Starting", ("Unknown", "Starting"), ("True", "Starting"), ("False", "Starting"),
     Retry.INTERVAL, ("Normal", "Starting")),
    ("WorkflowServiceStarting", "WorkflowServiceStarting", ("Unknown", "WorkflowServiceStarting"),
     ("True", "WorkflowServiceStarting"), ("False", "WorkflowServiceStarting"), Retry.INTERVAL,
     ("Normal", "WorkflowServiceStarting")),
    # A status PAI adds later is shown as sent (PAI's value is the reason), never guessed to be terminal, and
    # kept being polled.
    ("Paused", "Paused", ("Unknown", "Paused"), ("True", "Paused"), ("False", "Paused"),
     Retry.INTERVAL, ("Normal", "Paused")),
    # ...made to fit a condition reason's syntax when it does not.
    ("7-Odd state!", "7-Odd state!", ("Unknown", "Unrecognized"), ("True", "Unrecognized"),
     ("False", "Unrecognized"), Retry.INTERVAL, ("Normal", "Unrecognized")),
    ("Queued-ä.1", "Queued-ä.1", ("Unknown", "Queued1"), ("True", "Queued1"), ("False", "Queued1"),
     Retry.INTERVAL, ("Normal", "Queued1")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("pai_status", "run_status", "succeeded", "reconciling", "stalled", "retry", "event"),
    STATUS_TABLE,
    ids=[row[0] for row in STATUS_TABLE],
)
def test_every_pai_status_maps_to_run_status_conditions_retry_and_event(
    pai_status: str,
    run_status: str,
    succeeded: tuple[str, str],
    reconciling: tuple[str, str],
    stalled: tuple[str, str],
    retry: Retry,
    event: tuple[str, str],
) -> None:
    result, status = settle(pai_run(pai_status), generation=3)

    assert status["runStatus"] == run_status
    assert status["message"] == SAMPLE_MESSAGE
    assert status["observedGeneration"] == 3
    assert status["lastSyncTime"] == "2024-05-01T12:00:00Z"
    expected = {"Ready": ("True", "Synced"), "Succeeded": succeeded, "Reconciling": reconciling, "Stalled": stalled}
    assert {c["type"] for c in status["conditions"]} == set(expected)
    for type_, (cond_status, reason) in expected.items():
        cond = condition(status, type_)
        assert (cond["status"], cond["reason"]) == (cond_status, reason), type_
        assert cond["observedGeneration"] == 3, type_
        assert cond["lastTransitionTime"] == "2024-05-01T12:00:00Z", type_
    # The run conditions quote PAI's status and message, so `kubectl describe` explains a failure.
    assert condition(status, "Succeeded")["message"] == f"PAI run is {run_status}: {SAMPLE_MESSAGE}"
    assert result.retry is retry
    assert result.error_reason is None
    assert len(result.events) == 1
    (ev,) = result.events
    assert (ev.type, ev.reason) == event
    assert RUN_ID in ev.message and run_status in ev.message and SAMPLE_MESSAGE in ev.message


@pytest.mark.parametrize(("pai_status", "terminal"), [(row[0], row[5] is Retry.STOP) for row in STATUS_TABLE])
def test_is_finished_needs_terminal_status_and_current_generation(pai_status: str, terminal: bool) -> None:
    _, status = settle(pai_run(pai_status), generation=2)
    assert is_finished(status, 2) is terminal
    # The spec changed since the last sync: one more look at PAI is owed even for a finished run.
    assert is_finished(status, 3) is False


def test_one_event_per_status_transition_and_none_while_it_holds() -> None:
    sequence = ["Initialized", "Running", "Running", "Running", "Failed"]
    status: dict[str, Any] = {}
    seen: list[list[Event]] = []
    for minute, pai_status in enumerate(sequence):
        result, status = settle(pai_run(pai_status), status, now=T0 + timedelta(minutes=minute))
        seen.append(result.events)
    assert [[(e.type, e.reason) for e in events] for events in seen] == [
        [("Normal", "Initialized")],
        [("Normal", "Running")],
        [],
        [],
        [("Warning", "Failed")],
    ]


def test_last_transition_time_moves_only_when_the_condition_status_flips() -> None:
    _, status = settle(pai_run("Running"), now=T0)
    t1, t2 = T0 + timedelta(minutes=11), T0 + timedelta(minutes=12)
    # Still running after a heartbeat interval: a write happens (lastSyncTime) but no condition flips.
    result, status = settle(pai_run("Running"), status, now=t1)
    assert result.patch is not None
    assert {c["type"]: c["lastTransitionTime"] for c in status["conditions"]} == dict.fromkeys(
        ("Ready", "Succeeded", "Reconciling", "Stalled"), "2024-05-01T12:00:00Z"
    )
    _, status = settle(pai_run("Succeeded"), status, now=t2)
    assert condition(status, "Succeeded")["lastTransitionTime"] == timestamp(t2)  # Unknown -> True
    assert condition(status, "Reconciling")["lastTransitionTime"] == timestamp(t2)  # True -> False
    # Reason changed (Running -> Succeeded) but status did not: the transition time stays.
    assert condition(status, "Stalled")["reason"] == "Succeeded"
    assert condition(status, "Stalled")["lastTransitionTime"] == timestamp(T0)
    assert condition(status, "Ready")["lastTransitionTime"] == timestamp(T0)


def test_generation_bump_rewrites_observed_generation_without_moving_transition_times() -> None:
    _, status = settle(pai_run("Running"), generation=1)
    later = T0 + timedelta(minutes=1)
    result, status = settle(pai_run("Running"), status, generation=2, now=later)
    assert result.patch is not None
    assert set(result.patch) == {"observedGeneration", "conditions", "lastSyncTime"}
    assert status["observedGeneration"] == 2
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])
    assert all(c["lastTransitionTime"] == timestamp(T0) for c in status["conditions"])
    assert result.events == []


# ---- write only what changed -------------------------------------------------------------------------


def test_same_answer_twice_writes_nothing_the_second_time() -> None:
    first, status = settle(pai_run("Running"))
    assert first.patch is not None
    second, _ = settle(pai_run("Running"), status, now=T0 + timedelta(seconds=30))
    assert second.patch is None
    assert second.events == []
    assert second.retry is Retry.INTERVAL


def test_running_duration_is_not_mirrored_and_heartbeat_confirms_freshness() -> None:
    _, status = settle(pai_run("Running", Duration=60, RequestId="req-1"))
    # Duration and RequestId move on every poll of a running run: not worth a write by themselves.
    for seconds in (30, 60, 599):
        moving = pai_run("Running", Duration=60 + seconds, RequestId=f"req-{seconds}")
        result, _ = settle(moving, status, now=T0 + timedelta(seconds=seconds))
        assert result.patch is None, seconds
    beat = T0 + timedelta(minutes=10)
    result, status = settle(pai_run("Running", Duration=660, RequestId="req-600"), status, now=beat)
    assert result.patch == {"requestId": "req-600", "lastSyncTime": timestamp(beat)}
    assert "duration" not in status
    assert result.events == []


def test_real_change_writes_volatile_fields_along() -> None:
    _, status = settle(pai_run("Running", Duration=60))
    later = T0 + timedelta(seconds=30)
    result, _ = settle(pai_run("Succeeded", Duration=90, Message="step 3 of 3"), status, now=later)
    assert result.patch is not None
    assert result.patch["message"] == "step 3 of 3"
    assert result.patch["duration"] == 90
    assert result.patch["lastSyncTime"] == timestamp(later)


def test_verbose_false_mirrors_no_manifest_arguments_or_options() -> None:
    result, status = settle(pai_run("Running"), spec=make_spec(verbose=False))
    assert result.patch is not None
    for name in ("manifest", "arguments", "options", "truncatedFields"):
        assert name not in result.patch
        assert name not in status


def test_verbose_mirrors_text_fields_and_clears_them_when_turned_off() -> None:
    wire = sample_wire(Status="Running")
    _, status = settle(PipelineRun.from_wire(wire), spec=make_spec(verbose=True))
    assert status["manifest"] == wire["Manifest"]
    assert status["arguments"] == wire["Arguments"]
    assert status["options"] == wire["Options"].strip()
    assert "truncatedFields" not in status
    result, status = settle(pai_run("Running"), status, spec=make_spec(verbose=False), generation=2)
    assert result.patch is not None
    # null in a merge patch deletes the field: nothing verbose is left behind.
    assert {k: result.patch[k] for k in ("manifest", "arguments", "options")} == dict.fromkeys(
        ("manifest", "arguments", "options")
    )
    assert "manifest" not in status


@pytest.mark.parametrize(
    ("manifest", "limit", "expected"),
    [
        ("€" * 400, 1024, "€" * 341),  # 3-byte characters: 1023 bytes fit, the 342nd would split
        ("a" + "€" * 400, 1024, "a" + "€" * 341),  # 1024 bytes exactly
        ("ab" + "😀" * 300, 1024, "ab" + "😀" * 255),  # 4-byte characters: 1022 bytes
        ("x" * 2000, 1024, "x" * 1024),
    ],
    ids=["3-byte", "exact-fit", "4-byte", "ascii"],
)
def test_verbose_manifest_over_the_limit_is_cut_on_a_utf8_boundary(manifest: str, limit: int, expected: str) -> None:
    policy = Policy(heartbeat_interval=timedelta(minutes=10), max_text_field_bytes=limit)
    _, status = settle(pai_run("Running", Manifest=manifest), spec=make_spec(verbose=True), policy=policy)
    assert status["manifest"] == expected
    assert len(status["manifest"].encode("utf-8")) <= limit
    assert status["truncatedFields"] == ["manifest"]
    # The sample's arguments and options are small: mirrored whole.
    assert status["arguments"] == sample_wire()["Arguments"]


@pytest.mark.parametrize(
    ("text", "limit", "expected", "cut"),
    [("héllo", 100, "héllo", False), ("héllo", 6, "héllo", False), ("héllo", 2, "h", True), ("", 0, "", False)],
)
def test_truncate_utf8(text: str, limit: int, expected: str, cut: bool) -> None:
    assert truncate_utf8(text, limit) == (expected, cut)


# ---- batched answers -----------------------------------------------------------------------------------


def test_batched_answer_keeps_message_and_duration() -> None:
    _, status = settle(pai_run("Running", Duration=60))
    same, _ = settle(summary("Running"), status, now=T0 + timedelta(seconds=30))
    assert same.patch is None

    beat = T0 + timedelta(minutes=10)
    heartbeat, status = settle(summary("Running"), status, now=beat)
    assert heartbeat.patch == {"lastSyncTime": timestamp(beat)}

    later = beat + timedelta(seconds=30)
    changed, status = settle(summary("Succeeded"), status, now=later)
    assert changed.patch is not None
    assert changed.patch["runStatus"] == "Succeeded"
    # The summary has no message or duration: they must not be nulled out.
    for name in ("message", "duration", "startedAt", "name", "workspaceId"):
        assert name not in changed.patch, name
    assert status["message"] == SAMPLE_MESSAGE and status["startedAt"] and status["workspaceId"]
    assert condition(status, "Succeeded")["message"] == f"PAI run is Succeeded: {SAMPLE_MESSAGE}"
    assert [(e.type, e.reason) for e in changed.events] == [("Normal", "Succeeded")]
    assert changed.retry is Retry.STOP


def test_batched_unrecognised_status_is_shown_as_sent() -> None:
    _, status = settle(pai_run("Running"))
    result, status = settle(summary("Paused"), status)
    assert status["runStatus"] == "Paused"
    assert condition(status, "Succeeded")["reason"] == "Paused"
    assert result.retry is Retry.INTERVAL
    # The same unknown value again is no change: no write, no Event.
    again, _ = settle(summary("Paused"), status)
    assert again.patch is None and again.events == []


# ---- every error class --------------------------------------------------------------------------------

# error -> Ready=False reason, retry, whether it needs a human (Stalled=True)
ERROR_TABLE: list[tuple[str, PaiError, str, Retry, bool]] = [
    ("throttled", ThrottledError("Throttling.User", code="Throttling.User", http_status=429), "Throttled",
     Retry.BACKOFF, False),
    ("server", ServerError("internal error", code="InternalError", http_status=500), "ServerError", Retry.BACKOFF,
     False),
    ("transport", TransportError("connect timeout"), "TransportError", Retry.BACKOFF, False),
    ("malformed", MalformedResponseError("not JSON", http_status=200), "MalformedResponse", Retry.BACKOFF, False),
    ("not-found", NotFoundError("run not found", code="PipelineRunNotFound", http_status=404), "RunNotFound",
     Retry.SLOW, True),
    ("auth", AuthError("Specified access key is not found.", code="InvalidAccessKeyId.NotFound", http_status=404,
     request_id="REQ-1"), "AuthenticationFailed", Retry.SLOW, True),
    ("secret-not-found", CredentialsError("Secret ns/keys not found", code="SecretNotFound"), "SecretNotFound",
     Retry.SLOW, True),
    ("secret-key-missing", CredentialsError("Secret ns/keys has no key accessKeyId", code="SecretKeyMissing"),
     "SecretKeyMissing", Retry.SLOW, True),
    ("secret-forbidden", CredentialsError("may not read Secret ns/keys", code="SecretForbidden"), "SecretForbidden",
     Retry.SLOW, True),
    ("no-credentials", CredentialsError("default credential chain found nothing"), "CredentialsUnavailable",
     Retry.SLOW, True),
    ("bad-request", BadRequestError("invalid parameter", code="InvalidParameter", http_status=400), "BadRequest",
     Retry.SLOW, True),
]  # fmt: skip


@pytest.mark.parametrize(("error", "reason", "retry", "needs_human"), [r[1:] for r in ERROR_TABLE],
                         ids=[r[0] for r in ERROR_TABLE])  # fmt: skip
def test_every_error_keeps_the_last_good_status(error: PaiError, reason: str, retry: Retry, needs_human: bool) -> None:
    _, good = settle(pai_run("Running", Duration=60), generation=1)
    later = T0 + timedelta(minutes=1)
    result, status = settle(error, good, generation=1, now=later)

    assert result.patch is not None
    assert set(result.patch) == {"conditions"}, "an error must not touch the mirrored run status"
    for name in ("runStatus", "message", "startedAt", "lastSyncTime", "requestId"):
        assert status[name] == good[name], name
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert ready["message"] == error.describe(with_request_id=False)
    assert ready["lastTransitionTime"] == timestamp(later)
    assert result.retry is retry
    assert result.error_reason == reason
    stalled, reconciling = condition(status, "Stalled"), condition(status, "Reconciling")
    if needs_human:
        assert (stalled["status"], stalled["reason"]) == ("True", reason)
        assert (reconciling["status"], reconciling["reason"]) == ("False", reason)
    else:
        # A transient failure: the run is still progressing as far as anyone knows.
        assert (stalled["status"], reconciling["status"]) == ("False", "True")
    assert condition(status, "Succeeded") == condition(good, "Succeeded")
    assert result.events == [Event("Warning", reason, str(error))]


def test_auth_error_message_carries_pai_code_and_the_event_the_request_id() -> None:
    error = AuthError("Specified signature is not matched.", code="SignatureDoesNotMatch", request_id="REQ-9")
    result, status = settle(error)
    message = condition(status, "Ready")["message"]
    assert "SignatureDoesNotMatch" in message
    # The request id changes on every retry: kept out of the condition (no write per retry), in the Event.
    assert "REQ-9" not in message
    assert "REQ-9" in result.events[0].message
    again, _ = settle(
        AuthError("Specified signature is not matched.", code="SignatureDoesNotMatch", request_id="REQ-10"),
        status,
        now=T0 + timedelta(minutes=5),
    )
    assert again.patch is None


@pytest.mark.parametrize(("error", "reason"), [(r[1], r[2]) for r in ERROR_TABLE], ids=[r[0] for r in ERROR_TABLE])
def test_same_error_twice_posts_one_event_and_recovery_posts_recovered(error: PaiError, reason: str) -> None:
    _, status = settle(pai_run("Running"))
    first, status = settle(error, status, now=T0 + timedelta(minutes=1))
    assert [e.reason for e in first.events] == [reason]
    again, status = settle(error, status, now=T0 + timedelta(minutes=2))
    assert again.events == []
    assert again.patch is None, "an unchanged error must not rewrite the status"
    recovered, status = settle(pai_run("Running"), status, now=T0 + timedelta(minutes=3))
    assert [(e.type, e.reason) for e in recovered.events] == [("Normal", "Recovered")]
    assert reason in recovered.events[0].message
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Synced")
    assert condition(status, "Stalled")["status"] == "False"
    assert condition(status, "Reconciling")["status"] == "True"
    assert recovered.retry is Retry.INTERVAL


def test_a_different_error_class_posts_a_new_event() -> None:
    _, status = settle(pai_run("Running"))
    first, status = settle(ThrottledError("slow down"), status)
    second, status = settle(ServerError("boom"), status)
    third, status = settle(ServerError("boom again"), status)
    assert [[e.reason for e in r.events] for r in (first, second, third)] == [["Throttled"], ["ServerError"], []]


def test_error_before_any_answer_marks_the_run_pending() -> None:
    result, status = settle(ThrottledError("slow down"), {}, generation=4)
    assert result.patch is not None
    assert "runStatus" not in status
    assert status["observedGeneration"] == 4
    succeeded = condition(status, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("Unknown", "Pending")
    assert all(c["observedGeneration"] == 4 for c in status["conditions"])


# ---- spec.suspend ---------------------------------------------------------------------------------------


def test_suspended_keeps_the_status_and_stops_polling() -> None:
    _, good = settle(pai_run("Running"))
    later = T0 + timedelta(minutes=1)
    result = suspended(make_spec(suspend=True), 2, good, later)
    status = merged(good, result.patch)
    assert result.retry is Retry.STOP
    assert result.patch is not None and set(result.patch) == {"observedGeneration", "conditions"}
    assert status["runStatus"] == "Running" and status["message"] == SAMPLE_MESSAGE
    ready, reconciling = condition(status, "Ready"), condition(status, "Reconciling")
    # Ready stays True (reason Suspended) so kstatus reads Current, not InProgress for ever; it did not flip.
    assert (ready["status"], ready["reason"]) == ("True", "Suspended")
    assert ready["lastTransitionTime"] == condition(good, "Ready")["lastTransitionTime"]
    assert (reconciling["status"], reconciling["reason"]) == ("False", "Suspended")
    # Nothing was learnt about the run itself: its conditions stay exactly as last set (generation included).
    assert condition(status, "Succeeded") == condition(good, "Succeeded")
    assert condition(status, "Stalled") == condition(good, "Stalled")
    assert [(e.type, e.reason) for e in result.events] == [("Normal", "Suspended")]

    again = suspended(make_spec(suspend=True), 2, status, later + timedelta(minutes=5))
    assert again.patch is None
    assert again.events == []


def test_suspended_before_any_answer_sets_stalled_false() -> None:
    result = suspended(make_spec(suspend=True), 1, {}, T0)
    status = merged({}, result.patch)
    stalled = condition(status, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("False", "Suspended")
    assert "runStatus" not in status


# ---- backoff -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "seconds"), [(0, 5), (1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (30, 60)])
def test_backoff_delay_doubles_up_to_the_cap(attempt: int, seconds: int) -> None:
    assert backoff_delay(attempt, timedelta(seconds=5), timedelta(seconds=60)) == timedelta(seconds=seconds)


# ---- what costs a write -------------------------------------------------------------------------------


def test_gmt_modified_time_moving_alone_costs_no_write() -> None:
    _, status = settle(pai_run("Running", GmtModifiedTime="2024-05-01T12:00:00Z"))
    for minute in range(1, 5):
        later = pai_run("Running", GmtModifiedTime=f"2024-05-01T12:0{minute}:00Z")
        result, status = settle(later, status, now=T0 + timedelta(minutes=minute))
        assert result.patch is None, minute
    # ...but rides along with a real change.
    result, status = settle(pai_run("Succeeded", GmtModifiedTime="2024-05-01T12:09:00Z"), status)
    assert result.patch is not None and status["modifiedAt"] == "2024-05-01T12:09:00Z"


GRACE = Policy(heartbeat_interval=timedelta(minutes=10), error_grace=timedelta(seconds=90))


@pytest.mark.parametrize("error", [ServerError("boom"), ThrottledError("slow down"), TransportError("timeout")])
def test_a_retryable_error_within_the_grace_writes_nothing_then_shows(error: PaiError) -> None:
    _, status = settle(pai_run("Running"))
    quiet = reconcile(make_spec(), 1, status, error, T0, GRACE, failing_for=timedelta(seconds=89))
    assert quiet.patch is None and quiet.events == [] and quiet.retry is Retry.BACKOFF
    assert quiet.error_reason == error.kind.value
    shown = reconcile(make_spec(), 1, status, error, T0, GRACE, failing_for=timedelta(seconds=90))
    assert shown.patch is not None and condition(merged(status, shown.patch), "Ready")["status"] == "False"
    assert [e.type for e in shown.events] == ["Warning"]


@pytest.mark.parametrize("error", [NotFoundError("gone"), AuthError("denied"), BadRequestError("bad")])
def test_an_error_that_needs_a_human_shows_at_once_whatever_the_grace(error: PaiError) -> None:
    _, status = settle(pai_run("Running"))
    result = reconcile(make_spec(), 1, status, error, T0, GRACE, failing_for=timedelta(0))
    assert result.patch is not None and result.events


def test_a_first_sync_that_fails_shows_at_once_whatever_the_grace() -> None:
    result = reconcile(make_spec(), 1, {}, ServerError("boom"), T0, GRACE, failing_for=timedelta(0))
    assert result.patch is not None and condition(merged({}, result.patch), "Ready")["reason"] == "ServerError"


# ---- conditions are derived data ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["Succeeded", "Failed", "Terminated", "Skipped"])
def test_restored_conditions_are_what_reconcile_writes_for_that_status(status: str) -> None:
    written = reconcile(make_spec(), 1, {}, pai_run(status), T0, POLICY)
    assert written.patch is not None
    stored = {k: v for k, v in written.patch.items() if v is not None}
    # Unchanged: nothing to write.
    assert restore_conditions(make_spec(), 1, stored, T0 + timedelta(hours=1)).patch is None
    # Forged (a condition flipped, one removed, one added): put back, the stranger's type dropped.
    forged = [dict(c) for c in stored["conditions"] if c["type"] != "Stalled"]
    forged[1] = {**forged[1], "status": "True" if forged[1]["status"] != "True" else "False", "reason": "Forged"}
    forged.append({"type": "Approved", "status": "True", "reason": "Forged", "message": "", "lastTransitionTime": "x"})
    restored = restore_conditions(make_spec(), 1, {**stored, "conditions": forged}, T0 + timedelta(hours=1))
    assert restored.patch is not None and set(restored.patch) == {"conditions"}
    essence = [(c["type"], c["status"], c["reason"], c["message"]) for c in restored.patch["conditions"]]
    assert essence == [(c["type"], c["status"], c["reason"], c["message"]) for c in stored["conditions"]]
    assert [e.reason for e in restored.events] == ["ConditionsRestored"] and restored.retry is Retry.STOP


def test_restored_conditions_of_a_suspended_finished_run_say_suspended() -> None:
    written = reconcile(make_spec(), 1, {}, pai_run("Failed"), T0, POLICY)
    assert written.patch is not None
    stored = {k: v for k, v in written.patch.items() if v is not None}
    result = suspended(make_spec(suspend=True), 1, stored, T0)
    assert result.patch is not None
    stored |= result.patch
    assert restore_conditions(make_spec(suspend=True), 1, stored, T0).patch is None
    forged = {**stored, "conditions": [c for c in stored["conditions"] if c["type"] != "Ready"]}
    restored = restore_conditions(make_spec(suspend=True), 1, forged, T0)
    assert restored.patch is not None
    ready = next(c for c in restored.patch["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Suspended")

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


def test_run_name_ends_with_the_uid_and_lookup_matches_exactly() -> None:
    v = view(launch={"workspaceId": "1", "pipelineId": "p", "name": "resnet"})
    name = core.run_name(v)
    assert name == f"resnet-{UID}"
    rows = [
        PipelineRun.model_validate({"PipelineRunId": "flow-b", "Status": "Running", "Name": name + "-other"}),
        PipelineRun.model_validate(
            {"PipelineRunId": "flow-2", "Status": "Running", "Name": name, "GmtCreateTime": "2026-01-01T10:00:00Z"}
        ),
        PipelineRun.model_validate(
            {"PipelineRunId": "flow-1", "Status": "Running", "Name": name, "GmtCreateTime": "2026-01-01T09:00:00Z"}
        ),
    ]
    found, count = core.find_run(rows, name)
    assert found is not None and found.pipeline_run_id == "flow-1" and count == 2
    assert core.find_run(rows[:1], name) == (None, 0)


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

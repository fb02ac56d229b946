"""The proof of fidelity: the vendor's official SDK, pointed at the emulator, reads every field and every
error the way it would read PAI's.

``alibabacloud_paiflow20210202.client.Client`` signs with its own ACS3 implementation, sends with
``requests`` and parses with its own models, so none of this project's code is on the client side.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from alibabacloud_paiflow20210202 import models as pai_models
from alibabacloud_paiflow20210202.client import Client
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_openapi.exceptions import (
    AlibabaCloudException,
    ClientException,
    ServerException,
    ThrottlingException,
)
from alibabacloud_tea_util import models as util_models
from darabonba.exceptions import UnretryableException
from tests.integration.conftest import ACCESS_KEY, RUN_CLOCK_START, STS_KEY, STS_TOKEN

from paiflow_emulator import EmulatorThread, FaultKind, Timeline, iso_utc
from paiflow_emulator.runs import Run

REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
T0 = RUN_CLOCK_START


def sdk(
    thread: EmulatorThread,
    key: tuple[str, str] = ACCESS_KEY,
    token: str | None = None,
    read_timeout_ms: int = 5000,
) -> Client:
    # No retry_options: the SDK then makes exactly one attempt, which the counters below verify.
    config = open_api_models.Config(
        access_key_id=key[0],
        access_key_secret=key[1],
        security_token=token,
        endpoint=thread.endpoint,
        protocol="http",
        region_id="cn-hangzhou",
        read_timeout=read_timeout_ms,
        connect_timeout=2000,
    )
    return Client(config)


FIELDS: dict[str, Any] = {
    "Name": "train-resnet50",
    "PipelineId": "pipeline-j94yabcdefghlf7a",
    "WorkspaceId": "24601",
    "NodeId": "node-n06dabcdefghfc53",
    "UserId": "2001234567890",
    "ParentUserId": "1557702098194904",
    "SourceType": "DESIGNER",
    "SourceId": "abcd1234hxfu",
    "Accessibility": "PUBLIC",
}
ARGUMENTS = '{"arguments":{"parameters":[{"name":"execution","value":{"resourceType":"MaxCompute"}}]}}'
OPTIONS = '{"mlflow":{"experimentId":"exp-1234"}}'


def add_documented_run(thread: EmulatorThread, run_id: str, timeline: Timeline, age: float, **extra: Any) -> Run:
    return thread.emulator.add_run(
        timeline,
        age=age,
        run_id=run_id,
        name=FIELDS["Name"],
        pipeline_id=FIELDS["PipelineId"],
        workspace_id=FIELDS["WorkspaceId"],
        node_id=FIELDS["NodeId"],
        user_id=FIELDS["UserId"],
        parent_user_id=FIELDS["ParentUserId"],
        source_type=FIELDS["SourceType"],
        source_id=FIELDS["SourceId"],
        accessibility=FIELDS["Accessibility"],
        arguments=ARGUMENTS,
        options=OPTIONS,
        **extra,
    )


# (timeline, age, status, message, started, finished, duration, modified): offsets in seconds since creation.
STATES: dict[str, tuple[Timeline, float, str, str, float | None, float | None, int, float]] = {
    "initialized": (Timeline.succeeding(queued=10, running=30), 5, "Initialized", "", None, None, 0, 0),
    "running": (Timeline.succeeding(queued=10, running=30), 25, "Running", "", 10, None, 15, 10),
    "suspended": (
        Timeline.of(("Initialized", 2), ("Running", 10), ("Suspended", 100), ("Running", 10), ("Succeeded", None)),
        50,
        "Suspended",
        "",
        2,
        None,
        48,
        12,
    ),
    "terminating": (
        Timeline.of(("Running", 10), ("Terminating", 60), ("Terminated", None)),
        20,
        "Terminating",
        "",
        0,
        None,
        20,
        10,
    ),
    "succeeded": (Timeline.succeeding(queued=2, running=30), 100, "Succeeded", "", 2, 32, 30, 32),
    "failed": (Timeline.failing("OOMKilled", queued=2, running=8), 100, "Failed", "OOMKilled", 2, 10, 8, 10),
    "terminated": (
        Timeline.of(("Initialized", 1), ("Running", 5), ("Terminating", 2), ("Terminated", None, "by user")),
        100,
        "Terminated",
        "by user",
        1,
        8,
        7,
        8,
    ),
    "skipped": (Timeline.of(("Initialized", 3), ("Skipped", None)), 100, "Skipped", "", None, 3, 0, 3),
    "unknown": (Timeline.of(("Running", 5), ("Unknown", None)), 100, "Unknown", "", 0, None, 100, 5),
}


def expected_row(run_id: str, case: str) -> dict[str, Any]:
    _, age, status, message, started, finished, duration, modified = STATES[case]
    created = T0 - age
    row: dict[str, Any] = {
        **FIELDS,
        "PipelineRunId": run_id,
        "Status": status,
        "Message": message,
        "Duration": duration,
        "GmtCreateTime": iso_utc(created),
        "GmtModifiedTime": iso_utc(created + modified),
        "PipelineRunUri": (
            f"https://pai.console.aliyun.com/?regionId=cn-hangzhou&workspaceId={FIELDS['WorkspaceId']}"
            f"#/studio/task/detail/{run_id}"
        ),
    }
    if started is not None:
        row["StartedAt"] = iso_utc(created + started)
    if finished is not None:
        row["FinishedAt"] = iso_utc(created + finished)
    return row


@pytest.mark.parametrize("case", list(STATES))
def test_sdk_reads_every_field_in_every_state(emulator_thread: EmulatorThread, case: str) -> None:
    timeline, age = STATES[case][0], STATES[case][1]
    run_id = f"flow-state{case}"
    add_documented_run(emulator_thread, run_id, timeline, age)
    client = sdk(emulator_thread)

    got = client.get_pipeline_run(run_id, pai_models.GetPipelineRunRequest())
    assert got.status_code == 200
    body = got.body.to_map()
    assert REQUEST_ID.match(body.pop("RequestId"))
    assert body == {**expected_row(run_id, case), "Arguments": ARGUMENTS, "Options": OPTIONS}
    assert isinstance(got.body.duration, int)
    assert got.body.manifest is None  # only with Verbose=true

    listed = client.list_pipeline_runs(pai_models.ListPipelineRunsRequest(pipeline_run_id=run_id)).body
    assert listed.total_count == 1
    assert listed.pipeline_runs[0].to_map() == expected_row(run_id, case)

    statuses = client.list_pipeline_runs_status(
        pai_models.ListPipelineRunsStatusRequest(workspace_id=FIELDS["WorkspaceId"], pipeline_runs=[run_id])
    ).body
    assert [row.to_map() for row in statuses.pipeline_runs] == [
        {
            "PipelineRunId": run_id,
            "Status": STATES[case][2],
            "Name": FIELDS["Name"],
            "NodeId": FIELDS["NodeId"],
            "IsDeleted": False,
            "UserId": FIELDS["UserId"],
            "ParentUserId": FIELDS["ParentUserId"],
            "SourceId": FIELDS["SourceId"],
        }
    ]


def test_sdk_follows_a_run_as_the_clock_advances(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    run = emu.add_run(
        Timeline.of(("Initialized", 2), ("Running", 10), ("Suspended", 5), ("Running", 3), ("Succeeded", None))
    )
    client = sdk(emulator_thread)
    seen = []
    for step in (1, 2, 10, 5, 3, 100):
        body = client.get_pipeline_run(run.run_id, pai_models.GetPipelineRunRequest()).body
        seen.append((body.status, body.duration))
        emu.advance(step)
    assert seen == [
        ("Initialized", 0),
        ("Initialized", 0),
        ("Running", 1),
        ("Suspended", 11),
        ("Running", 16),
        ("Succeeded", 18),
    ]


def test_verbose_manifest_type_and_share_token(emulator_thread: EmulatorThread) -> None:
    size = 3 * 1024 * 1024
    run = add_documented_run(
        emulator_thread,
        "flow-sharedbigmanifest",
        Timeline.succeeding(),
        100,
        share_token="eyJ0share",
        manifest_size=size,
    )
    client = sdk(emulator_thread)

    with pytest.raises(ClientException) as denied:
        client.get_pipeline_run(run.run_id, pai_models.GetPipelineRunRequest(verbose=True))
    assert (denied.value.status_code, denied.value.code) == (403, "NoPermission")

    raw = client.get_pipeline_run(run.run_id, pai_models.GetPipelineRunRequest(verbose=True, token_id="eyJ0share")).body
    assert raw.manifest is not None and len(raw.manifest) == size
    assert json.loads(raw.manifest)["Metadata"]["Name"] == run.run_id

    for manifest_type in ("Frozen", "Rendered", "Expanded", "Runtime"):
        body = client.get_pipeline_run(
            run.run_id,
            pai_models.GetPipelineRunRequest(verbose=True, manifest_type=manifest_type, token_id="eyJ0share"),
        ).body
        assert body.manifest is not None
        annotations = json.loads(body.manifest)["Metadata"]["Annotations"]
        assert annotations == {"paiflow-emulator/manifest-type": manifest_type}

    quiet = client.get_pipeline_run(run.run_id, pai_models.GetPipelineRunRequest(verbose=False, token_id="eyJ0share"))
    assert quiet.body.manifest is None
    assert quiet.body.arguments == ARGUMENTS


def test_list_pipeline_runs_filters_and_pages(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    for i in range(7):
        emu.add_run(Timeline.succeeding(queued=0, running=1), age=50 + i, workspace_id="ws-page", name=f"job-{i}")
    emu.add_run(Timeline.running_forever(), age=1, workspace_id="ws-page", name="still-going", source_type="SDK")
    client = sdk(emulator_thread)

    page = client.list_pipeline_runs(
        pai_models.ListPipelineRunsRequest(
            workspace_id="ws-page",
            status="Succeeded",
            page_number=2,
            page_size=3,
            sort_by="GmtCreateTime",
            order="DESC",
        )
    ).body
    assert page.total_count == 7
    assert [row.name for row in page.pipeline_runs] == ["job-3", "job-4", "job-5"]
    assert all(row.status == "Succeeded" and row.duration == 1 for row in page.pipeline_runs)

    running = client.list_pipeline_runs(
        pai_models.ListPipelineRunsRequest(workspace_id="ws-page", status="Running")
    ).body
    assert [row.name for row in running.pipeline_runs] == ["still-going"]
    assert running.pipeline_runs[0].finished_at is None


def test_list_pipeline_runs_status_batch(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    runs = [
        emu.add_run(timeline, workspace_id="ws-batch", age=100)
        for timeline in (Timeline.running_forever(), Timeline.failing("x"), Timeline.succeeding())
    ]
    deleted = emu.add_run(workspace_id="ws-batch")
    emu.delete_run(deleted.run_id)
    client = sdk(emulator_thread)
    ids = [r.run_id for r in runs]
    body = client.list_pipeline_runs_status(
        pai_models.ListPipelineRunsStatusRequest(
            workspace_id="ws-batch",
            pipeline_runs=[*ids, "flow-doesnotexist", deleted.run_id],
            nodes=[pai_models.ListPipelineRunsStatusRequestNodes(pipeline_run_id=ids[1], node_id=runs[1].node_id)],
        )
    ).body
    assert [(r.pipeline_run_id, r.status, r.is_deleted) for r in body.pipeline_runs] == [
        (ids[0], "Running", False),
        (ids[1], "Failed", False),
        (ids[2], "Succeeded", False),
        (deleted.run_id, "Initialized", True),
    ]
    assert len(body.nodes) == 1
    node = body.nodes[0]
    assert (node.pipeline_run_id, node.node_id, node.status) == (ids[1], runs[1].node_id, "Failed")
    assert node.started_at == iso_utc(T0 - 100 + 2)
    assert node.finished_at == iso_utc(T0 - 100 + 32)
    assert emu.counters.snapshot().actions == {"ListPipelineRunsStatus": 1}


@pytest.mark.parametrize(
    ("kind", "extra", "exc_type", "status", "code"),
    [
        (FaultKind.UNAVAILABLE, {}, ServerException, 503, "ServiceUnavailable"),
        (FaultKind.INTERNAL, {}, ServerException, 500, "InternalError"),
        (FaultKind.ERROR, {"status": 502, "code": "BadGateway"}, ServerException, 502, "BadGateway"),
        (FaultKind.THROTTLE, {}, ClientException, 400, "Throttling.User"),
        (FaultKind.THROTTLE, {"status": 429, "retry_after_ms": 50}, ThrottlingException, 429, "Throttling.User"),
        (FaultKind.NOT_FOUND, {}, ClientException, 404, "PipelineRunNotFound"),
        (FaultKind.BAD_CREDENTIALS, {}, ClientException, 404, "InvalidAccessKeyId.NotFound"),
    ],
)
def test_sdk_sees_injected_faults_as_vendor_errors(
    emulator_thread: EmulatorThread,
    kind: FaultKind,
    extra: dict[str, Any],
    exc_type: type[AlibabaCloudException],
    status: int,
    code: str,
) -> None:
    emu = emulator_thread.emulator
    run = emu.add_run()
    emu.add_fault(kind, run_id=run.run_id, count=1, **extra)
    client = sdk(emulator_thread)
    with pytest.raises(exc_type) as info:
        client.get_pipeline_run(run.run_id, pai_models.GetPipelineRunRequest())
    err = info.value
    assert type(err) is exc_type
    assert (err.status_code, err.code) == (status, code)
    assert err.data["Code"] == code
    assert err.data["statusCode"] == status
    assert REQUEST_ID.match(err.data["RequestId"])
    assert err.request_id == err.data["RequestId"]
    assert set(err.data) >= {"RequestId", "HostId", "Code", "Message", "Recommend"}
    # One attempt only, and the fault was used up: the next call succeeds.
    assert emu.counters.snapshot().outcomes == {code: 1}
    assert client.get_pipeline_run(run.run_id, pai_models.GetPipelineRunRequest()).body.status == "Initialized"


def test_qps_limit_reaches_the_sdk_as_throttling(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    run = emu.add_run()
    emu.set_qps_limit(2, burst=2)
    client = sdk(emulator_thread)
    codes = []
    for _ in range(5):
        try:
            client.get_pipeline_run(run.run_id, pai_models.GetPipelineRunRequest())
            codes.append("ok")
        except ClientException as exc:
            codes.append(exc.code)
    assert codes[:2] == ["ok", "ok"]
    assert "Throttling.User" in codes[2:]


def test_malformed_body_is_an_sdk_parse_failure(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    run = emu.add_run()
    emu.add_fault("malformed", count=1)
    with pytest.raises(UnretryableException) as info:
        sdk(emulator_thread).get_pipeline_run(run.run_id, pai_models.GetPipelineRunRequest())
    assert "json" in str(info.value).lower()


def test_hang_ends_in_the_sdk_read_timeout(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    run = emu.add_run()
    emu.add_fault("hang", count=1)
    client = sdk(emulator_thread)
    started = time.monotonic()
    with pytest.raises(UnretryableException) as info:
        client.get_pipeline_run_with_options(
            run.run_id, pai_models.GetPipelineRunRequest(), {}, util_models.RuntimeOptions(read_timeout=300)
        )
    assert time.monotonic() - started < 3
    assert "timed out" in str(info.value).lower()
    assert emu.counters.snapshot().outcomes == {"Hang": 1}


@pytest.mark.parametrize(
    ("key", "token", "status", "code"),
    [
        (("LTAI5tNoSuchKey", "whatever"), None, 404, "InvalidAccessKeyId.NotFound"),
        ((ACCESS_KEY[0], "wrong-secret"), None, 400, "SignatureDoesNotMatch"),
        (STS_KEY, "CAIS-not-issued", 400, "InvalidSecurityToken.Malformed"),
        (ACCESS_KEY, STS_TOKEN, 400, "InvalidSecurityToken.MismatchWithAccessKey"),
        (STS_KEY, None, 400, "MissingSecurityToken"),
    ],
)
def test_sdk_credential_errors(
    emulator_thread: EmulatorThread, key: tuple[str, str], token: str | None, status: int, code: str
) -> None:
    run = emulator_thread.emulator.add_run()
    with pytest.raises(ClientException) as info:
        sdk(emulator_thread, key, token).get_pipeline_run(run.run_id, pai_models.GetPipelineRunRequest())
    assert (info.value.status_code, info.value.code) == (status, code)
    assert info.value.data["Code"] == code


def test_sdk_with_sts_token_and_its_expiry(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    run = emu.add_run()
    client = sdk(emulator_thread, STS_KEY, STS_TOKEN)
    assert client.get_pipeline_run(run.run_id, pai_models.GetPipelineRunRequest()).body.pipeline_run_id == run.run_id
    emu.expire_sts_token(STS_TOKEN)
    with pytest.raises(ClientException) as info:
        client.get_pipeline_run(run.run_id, pai_models.GetPipelineRunRequest())
    assert (info.value.status_code, info.value.code) == (400, "InvalidSecurityToken.Expired")


def test_sdk_requests_are_not_replayable(emulator_thread: EmulatorThread) -> None:
    """Every SDK call passes the nonce check, and the emulator saw each one exactly once."""
    run = emulator_thread.emulator.add_run()
    client = sdk(emulator_thread)
    for _ in range(20):
        client.get_pipeline_run(run.run_id, pai_models.GetPipelineRunRequest())
    assert emulator_thread.emulator.counters.snapshot().outcomes == {"ok": 20}


# ---- the actions a launch uses: CreatePipelineRun, StartPipelineRun, TerminatePipelineRun ------------------


def test_sdk_creates_a_run_from_a_registered_pipeline_and_it_plays_its_timeline(
    emulator_thread: EmulatorThread,
) -> None:
    emu = emulator_thread.emulator
    emu.add_pipeline(
        "pipeline-registered01", workspace_id="24601", timeline=Timeline.of(("Running", 10), ("Succeeded", None))
    )
    client = sdk(emulator_thread)
    created = client.create_pipeline_run(
        pai_models.CreatePipelineRunRequest(
            workspace_id="24601",
            pipeline_id="pipeline-registered01",
            name="train-from-sdk",
            arguments=ARGUMENTS,
            options=OPTIONS,
            accessibility="PUBLIC",
            no_confirm_required=True,
            source_type="SDK",
            source_id="k8s-uid-1",
        )
    )
    assert created.status_code == 200
    run_id = created.body.pipeline_run_id
    assert run_id.startswith("flow-") and REQUEST_ID.match(created.body.request_id)
    got = client.get_pipeline_run(run_id, pai_models.GetPipelineRunRequest()).body
    assert (got.name, got.status, got.pipeline_id, got.workspace_id) == (
        "train-from-sdk",
        "Running",
        "pipeline-registered01",
        "24601",
    )
    assert (got.arguments, got.options, got.accessibility, got.source_id) == (ARGUMENTS, OPTIONS, "PUBLIC", "k8s-uid-1")
    emu.advance(11)
    assert client.get_pipeline_run(run_id, pai_models.GetPipelineRunRequest()).body.status == "Succeeded"
    found = client.list_pipeline_runs(
        pai_models.ListPipelineRunsRequest(workspace_id="24601", name="train-from-sdk")
    ).body
    assert [r.pipeline_run_id for r in found.pipeline_runs] == [run_id]


def test_sdk_creates_from_an_inline_manifest_waits_for_start_then_terminates(
    emulator_thread: EmulatorThread,
) -> None:
    client = sdk(emulator_thread)
    run_id = client.create_pipeline_run(
        pai_models.CreatePipelineRunRequest(
            workspace_id="24601",
            pipeline_manifest="apiVersion: core/v1\nmetadata:\n  name: inline\n",
            name="inline",
            no_confirm_required=False,
        )
    ).body.pipeline_run_id
    get = pai_models.GetPipelineRunRequest()
    emulator_thread.emulator.advance(30)
    assert client.get_pipeline_run(run_id, get).body.status == "Initialized"  # waits for StartPipelineRun
    started = client.start_pipeline_run(run_id)
    assert started.status_code == 200 and REQUEST_ID.match(started.body.request_id)
    emulator_thread.emulator.advance(2)
    assert client.get_pipeline_run(run_id, get).body.status == "Running"
    with pytest.raises(ClientException) as again:
        client.start_pipeline_run(run_id)
    assert again.value.code == "PipelineRunStatusInvalid"
    stopped = client.terminate_pipeline_run(run_id)
    assert stopped.status_code == 200
    assert client.get_pipeline_run(run_id, get).body.status == "Terminating"
    assert client.terminate_pipeline_run(run_id).status_code == 200  # asked twice while stopping: same answer
    emulator_thread.emulator.advance(emulator_thread.emulator.terminating_seconds + 0.1)
    assert client.get_pipeline_run(run_id, get).body.status == "Terminated"
    with pytest.raises(ClientException) as done:
        client.terminate_pipeline_run(run_id)
    assert done.value.code == "PipelineRunStatusInvalid" and done.value.status_code == 400


@pytest.mark.parametrize(
    ("request_fields", "code", "message"),
    [
        ({"pipeline_id": "pipeline-nope"}, "PipelineNotExist", "pipeline-nope"),
        ({"pipeline_id": "pipeline-known", "workspace_id": "999"}, "WorkspaceNotExist", "999"),
        ({}, "InvalidParameter", "exactly one of PipelineId and PipelineManifest"),
        ({"pipeline_id": "pipeline-known", "arguments": "{not json: ["}, "InvalidParameter", "Arguments"),
        ({"pipeline_id": "pipeline-known", "accessibility": "SHARED"}, "InvalidParameter", "Accessibility"),
    ],
)
def test_sdk_sees_create_refusals_as_vendor_errors(
    emulator_thread: EmulatorThread, request_fields: dict[str, Any], code: str, message: str
) -> None:
    emu = emulator_thread.emulator
    emu.add_workspace("24601")
    emu.add_pipeline("pipeline-known", workspace_id="24601")
    fields = {"workspace_id": "24601", "name": "refused", **request_fields}
    with pytest.raises(ClientException) as caught:
        sdk(emulator_thread).create_pipeline_run(pai_models.CreatePipelineRunRequest(**fields))
    assert caught.value.code == code and caught.value.status_code == 400
    assert message in caught.value.message
    assert emu.runs_named("refused") == []


def test_sdk_terminate_and_start_of_an_unknown_run(emulator_thread: EmulatorThread) -> None:
    client = sdk(emulator_thread)
    for call in (client.terminate_pipeline_run, client.start_pipeline_run):
        with pytest.raises(ClientException) as caught:
            call("flow-doesnotexist00000")
        assert caught.value.code == "PipelineRunNotFound" and caught.value.status_code == 404


def test_hold_fault_creates_the_run_but_loses_the_answer(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    emu.add_pipeline("pipeline-held", workspace_id="24601")
    emu.add_fault(FaultKind.HOLD, action="CreatePipelineRun", count=1)
    client = sdk(emulator_thread, read_timeout_ms=500)
    request = pai_models.CreatePipelineRunRequest(workspace_id="24601", pipeline_id="pipeline-held", name="held")
    with pytest.raises(UnretryableException):
        client.create_pipeline_run(request)
    (run,) = emu.runs_named("held")  # PAI made it all the same
    assert run.pipeline_id == "pipeline-held"


# ---- what a launch that never makes two runs relies on: list lag, SourceId, paging, Start, Delete --------------


def test_a_created_run_is_listed_only_after_the_list_lag_but_read_by_id_at_once(
    emulator_thread: EmulatorThread,
) -> None:
    emu = emulator_thread.emulator
    emu.list_lag = 30.0
    client = sdk(emulator_thread)
    run_id = client.create_pipeline_run(
        pai_models.CreatePipelineRunRequest(
            workspace_id="24601",
            pipeline_manifest="apiVersion: core/v1\n",
            name="lagging",
            no_confirm_required=False,
            source_id="uid-lag",
        )
    ).body.pipeline_run_id
    by_source = pai_models.ListPipelineRunsRequest(workspace_id="24601", source_id="uid-lag")
    assert client.list_pipeline_runs(by_source).body.pipeline_runs == []
    assert client.list_pipeline_runs(by_source).body.total_count == 0
    assert client.get_pipeline_run(run_id, pai_models.GetPipelineRunRequest()).body.status == "Initialized"
    emu.advance(29)
    assert client.list_pipeline_runs(by_source).body.pipeline_runs == []
    emu.advance(2)
    listed = client.list_pipeline_runs(by_source).body
    assert [(r.pipeline_run_id, r.source_id, r.status) for r in listed.pipeline_runs] == [
        (run_id, "uid-lag", "Initialized")
    ]
    # Runs that did not come from CreatePipelineRun (added by a test) are listed at once.
    emu.add_run(workspace_id="24601", name="added", source_id="uid-lag")
    assert client.list_pipeline_runs(by_source).body.total_count == 2


def test_a_create_without_no_confirm_required_starts_the_run(emulator_thread: EmulatorThread) -> None:
    # PAI documents NoConfirmRequired true ("start at once") as the default.
    client = sdk(emulator_thread)
    run_id = client.create_pipeline_run(
        pai_models.CreatePipelineRunRequest(workspace_id="1", pipeline_manifest="apiVersion: core/v1\n", name="auto")
    ).body.pipeline_run_id
    queued = emulator_thread.emulator.created_timeline.phases[0].duration or 0.0
    emulator_thread.emulator.advance(queued + 0.5)
    assert client.get_pipeline_run(run_id, pai_models.GetPipelineRunRequest()).body.status == "Running"


def test_list_pipeline_runs_by_source_id_pages_through_every_row(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    mine = {emu.add_run(age=100 - i, workspace_id="ws-src", source_id="uid-1", name=f"r-{i}").run_id for i in range(7)}
    emu.add_run(workspace_id="ws-src", source_id="uid-2", name="r-other")
    emu.add_run(workspace_id="ws-else", source_id="uid-1", name="r-elsewhere")
    client = sdk(emulator_thread)
    seen: list[str] = []
    for page in (1, 2, 3, 4):
        body = client.list_pipeline_runs(
            pai_models.ListPipelineRunsRequest(
                workspace_id="ws-src", source_id="uid-1", page_number=page, page_size=3, sort_by="GmtCreateTime"
            )
        ).body
        assert body.total_count == 7
        assert all(r.source_id == "uid-1" and r.workspace_id == "ws-src" for r in body.pipeline_runs)
        seen += [r.pipeline_run_id for r in body.pipeline_runs]
        if len(body.pipeline_runs) < 3:
            break
    assert page == 3 and len(seen) == 7 and set(seen) == mine


def test_delete_pipeline_run_follows_pai_state_rule(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    client = sdk(emulator_thread)
    unstarted = client.create_pipeline_run(
        pai_models.CreatePipelineRunRequest(
            workspace_id="24601", pipeline_manifest="apiVersion: core/v1\n", name="orphan", no_confirm_required=False
        )
    ).body.pipeline_run_id
    running = emu.add_run(Timeline.running_forever(), workspace_id="24601", name="busy").run_id
    finished = emu.add_run(Timeline.succeeding(queued=0, running=1), age=10, workspace_id="24601", name="done").run_id

    deleted = client.delete_pipeline_run(unstarted)
    assert deleted.status_code == 200 and REQUEST_ID.match(deleted.body.request_id)
    with pytest.raises(ClientException) as gone:
        client.get_pipeline_run(unstarted, pai_models.GetPipelineRunRequest())
    assert gone.value.code == "PipelineRunNotFound" and gone.value.status_code == 404
    with pytest.raises(ClientException) as started:
        client.start_pipeline_run(unstarted)  # a deleted run can never be started
    assert started.value.code == "PipelineRunNotFound"
    listed = client.list_pipeline_runs(pai_models.ListPipelineRunsRequest(workspace_id="24601")).body
    assert unstarted not in [r.pipeline_run_id for r in listed.pipeline_runs]
    status = client.list_pipeline_runs_status(
        pai_models.ListPipelineRunsStatusRequest(workspace_id="24601", pipeline_runs=[unstarted])
    ).body
    assert [(r.pipeline_run_id, r.is_deleted) for r in status.pipeline_runs] == [(unstarted, True)]

    with pytest.raises(ClientException) as refused:
        client.delete_pipeline_run(running)
    assert refused.value.code == "PipelineRunStatusInvalid" and refused.value.status_code == 400
    assert emu.status_of(running) == "Running"
    assert client.delete_pipeline_run(finished).status_code == 200
    with pytest.raises(ClientException) as missing:
        client.delete_pipeline_run("flow-doesnotexist00000")
    assert missing.value.code == "PipelineRunNotFound"
    by_action = emu.counters.snapshot(include_runs=False).by_action["DeletePipelineRun"]
    assert by_action == {"ok": 2, "PipelineRunStatusInvalid": 1, "PipelineRunNotFound": 1}


# A run of three steps, the middle one a nested Dag of two; "train" fails 25 s in and writes log lines.
NODE_TREE: list[dict[str, Any]] = [
    {"name": "prepare", "start": 0, "duration": 10, "logs": ["reading table", "wrote 1200 rows"]},
    {
        "name": "features",
        "children": [
            {"name": "encode", "start": 10, "duration": 5, "outputs": [{"name": "encoded", "type": "DataSet"}]},
            {"name": "scale", "start": 10, "duration": 8},
        ],
    },
    {
        "name": "train",
        "start": 18,
        "duration": 7,
        "fail": True,
        "logs": [[1, "epoch 1 loss=0.9"], [3, "epoch 2 loss=0.7"], [6, "CUDA error: out of memory"]],
        "outputs": [{"name": "model", "type": "Model", "info": {"uri": "oss://bucket/model/"}}],
    },
]


def node_run(thread: EmulatorThread, age: float, *, fail: bool = True, **extra: Any) -> Run:
    tree = json.loads(json.dumps(NODE_TREE))
    tree[2]["fail"] = fail
    end = ("Failed", None, "train failed") if fail else ("Succeeded", None)
    return thread.emulator.load_scenario(
        {
            "runs": [
                {
                    "id": extra.pop("run_id", "flow-nodetree"),
                    "nodeId": "node-root",
                    "createdAt": T0 - age,
                    "timeline": [["Initialized", 2], ["Running", 25], list(end)],
                    "nodes": tree,
                    **extra,
                }
            ]
        }
    )[0]


def test_sdk_reads_a_node_tree_that_moves_with_the_run(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    run = node_run(emulator_thread, age=14)  # 12 s into Running: prepare done, the Dag's two leaves running
    client = sdk(emulator_thread)

    got = client.get_pipeline_run_node(run.run_id, "node-root", pai_models.GetPipelineRunNodeRequest(depth=3)).body
    assert REQUEST_ID.match(got.request_id)
    assert (got.metadata.node_id, got.metadata.node_type, got.metadata.name) == ("node-root", "Dag", run.name)
    assert (got.status_info.status, got.status_info.progress) == ("Running", "1/4")
    assert got.status_info.started_at == iso_utc(T0 - 12)
    assert got.spec.has_pipelines is True
    children = {c["Metadata"]["Name"]: c for c in got.spec.pipelines}
    assert {n: c["StatusInfo"]["Status"] for n, c in children.items()} == {
        "prepare": "Succeeded",
        "features": "Running",
        "train": "ReadyToSchedule",
    }
    assert children["prepare"]["StatusInfo"]["FinishedAt"] == iso_utc(T0 - 2)
    features = children["features"]
    assert features["Metadata"]["NodeType"] == "Dag" and features["StatusInfo"]["Progress"] == "0/2"
    assert [c["Metadata"]["Name"] for c in features["Spec"]["Pipelines"]] == ["encode", "scale"]

    # Depth 2 (the default): the nested Dag comes without its children.
    shallow = client.get_pipeline_run_node(run.run_id, "node-root", pai_models.GetPipelineRunNodeRequest()).body
    nested = next(c for c in shallow.spec.pipelines if c["Metadata"]["Name"] == "features")
    assert "Pipelines" not in nested["Spec"] and nested["Spec"]["HasPipelines"] is True

    rows = client.list_pipeline_run_node_status(
        run.run_id, "node-root", pai_models.ListPipelineRunNodeStatusRequest(depth=3)
    ).body
    assert [(r.node_name, r.status) for r in rows.status] == [
        (run.name, "Running"),
        ("prepare", "Succeeded"),
        ("features", "Running"),
        ("encode", "Running"),
        ("scale", "Running"),
        ("train", "ReadyToSchedule"),
    ]
    assert all(r.runtime_info == "{}" for r in rows.status)

    emu.advance(30)  # the run has failed, with train
    end = client.get_pipeline_run_node(run.run_id, "node-root", pai_models.GetPipelineRunNodeRequest(depth=3)).body
    assert (end.status_info.status, end.status_info.progress) == ("Failed", "4/4")
    assert end.status_info.finished_at == iso_utc(T0 - 14 + 27)
    train_id = next(c["Metadata"]["NodeId"] for c in end.spec.pipelines if c["Metadata"]["Name"] == "train")
    train = client.get_pipeline_run_node(run.run_id, train_id, pai_models.GetPipelineRunNodeRequest()).body
    assert (train.metadata.node_type, train.status_info.status, train.status_info.progress) == ("Pod", "Failed", "1/1")


def test_sdk_pages_node_logs_reverse_and_from_time(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    run = node_run(emulator_thread, age=24)  # train began 4 s ago: two of its three lines are written
    client = sdk(emulator_thread)
    tree = run.tree(emu.clock.now())
    train = next(n for n in tree.children if n.name == "train")

    def logs(**kw: Any) -> pai_models.ListPipelineRunNodeLogsResponseBody:
        return client.list_pipeline_run_node_logs(
            run.run_id, train.node_id, pai_models.ListPipelineRunNodeLogsRequest(**kw)
        ).body

    assert (logs().logs, logs().total_count) == (["epoch 1 loss=0.9", "epoch 2 loss=0.7"], 2)
    emu.advance(10)
    assert logs().total_count == 3
    assert logs(reverse=True, page_size=1).logs == ["CUDA error: out of memory"]
    assert logs(offset=1, page_size=1).logs == ["epoch 2 loss=0.7"]
    train_started = int(T0 - 24 + 2 + 18)
    assert logs(from_time_in_seconds=train_started + 2).logs == ["epoch 2 loss=0.7", "CUDA error: out of memory"]
    assert logs(to_time_in_seconds=train_started + 2).logs == ["epoch 1 loss=0.9"]
    assert logs(keyword="cuda").logs == ["CUDA error: out of memory"]

    root = client.list_pipeline_run_node_logs(run.run_id, "node-root", pai_models.ListPipelineRunNodeLogsRequest())
    assert (root.body.logs, root.body.total_count) == ([], 0)

    with pytest.raises(ClientException) as bad:
        logs(page_size=0)
    assert (bad.value.status_code, bad.value.code) == (400, "InvalidParameter")
    with pytest.raises(ClientException) as missing:
        client.list_pipeline_run_node_logs(run.run_id, "node-nope", pai_models.ListPipelineRunNodeLogsRequest())
    assert (missing.value.status_code, missing.value.code) == (404, "PipelineRunNodeNotFound")


def test_sdk_lists_outputs_once_their_node_succeeded(emulator_thread: EmulatorThread) -> None:
    run = node_run(emulator_thread, age=100, fail=False, run_id="flow-nodeoutputs")
    client = sdk(emulator_thread)

    def outputs(**kw: Any) -> pai_models.ListPipelineRunNodeOutputsResponseBody:
        return client.list_pipeline_run_node_outputs(
            run.run_id, "node-root", pai_models.ListPipelineRunNodeOutputsRequest(**kw)
        ).body

    every = outputs(depth=3, sort_by="Name", order="ASC")
    assert every.total_count == 2
    assert [(o.name, o.type, o.producer) for o in every.outputs] == [
        ("encoded", "DataSet", "encode"),
        ("model", "Model", "train"),
    ]
    model = every.outputs[1]
    assert model.info == {"uri": "oss://bucket/model/"}
    assert model.gmt_create_time == iso_utc(T0 - 100 + 2 + 25)
    assert model.node_id == next(n.node_id for n in run.tree(T0).children if n.name == "train")
    assert [o.name for o in outputs(depth=3, type="Model").outputs] == ["model"]
    assert [o.name for o in outputs(depth=2).outputs] == ["model"]  # encode lies a level deeper
    assert outputs(depth=3, page_size=1, page_number=2, sort_by="Name", order="ASC").outputs[0].name == "model"

    with pytest.raises(ClientException) as no_depth:
        outputs()
    assert (no_depth.value.status_code, no_depth.value.code) == (400, "InvalidParameter")

    failed = node_run(emulator_thread, age=100, fail=True, run_id="flow-nodefailed")
    got = client.list_pipeline_run_node_outputs(
        failed.run_id, "node-root", pai_models.ListPipelineRunNodeOutputsRequest(depth=3)
    ).body
    assert [o.name for o in got.outputs] == ["encoded"]  # the failed train made no model


def test_sdk_node_calls_need_the_share_token(emulator_thread: EmulatorThread) -> None:
    run = node_run(emulator_thread, age=100, run_id="flow-nodeshared", shareToken="eyJ0node")
    client = sdk(emulator_thread)
    with pytest.raises(ClientException) as denied:
        client.get_pipeline_run_node(run.run_id, "node-root", pai_models.GetPipelineRunNodeRequest())
    assert (denied.value.status_code, denied.value.code) == (403, "NoPermission")
    ok = client.list_pipeline_run_node_status(
        run.run_id, "node-root", pai_models.ListPipelineRunNodeStatusRequest(token_id="eyJ0node")
    )
    assert ok.body.status[0].status == "Failed"


def test_a_run_without_scripted_nodes_has_one_leaf_as_long_as_the_run(emulator_thread: EmulatorThread) -> None:
    emu = emulator_thread.emulator
    run = emu.add_run(Timeline.succeeding(queued=2, running=10), age=5, node_id="node-plain")
    client = sdk(emulator_thread)
    body = client.get_pipeline_run_node(run.run_id, "node-plain", pai_models.GetPipelineRunNodeRequest()).body
    assert (body.status_info.status, body.status_info.progress) == ("Running", "0/1")
    assert [c["Metadata"]["Name"] for c in body.spec.pipelines] == ["main"]
    emu.advance(10)
    body = client.get_pipeline_run_node(run.run_id, "node-plain", pai_models.GetPipelineRunNodeRequest()).body
    assert (body.status_info.status, body.status_info.progress) == ("Succeeded", "1/1")

"""Our PaiClient against the emulator over real sockets: statuses, error classes, STS, timeouts."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.integration.conftest import ACCESS_KEY, RUN_CLOCK_START, STS_KEY, STS_TOKEN

from paiflow_emulator import Emulator, FaultKind, Timeline
from paiflow_operator.pai.client import PaiClient
from paiflow_operator.pai.credentials import StaticCredentialSource
from paiflow_operator.pai.errors import (
    AuthError,
    BadRequestError,
    MalformedResponseError,
    NotFoundError,
    PaiError,
    ServerError,
    ThrottledError,
    TransportError,
)
from paiflow_operator.pai.models import RunStatus

REGION = "cn-hangzhou"
REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
T0 = RUN_CLOCK_START
CREDS = StaticCredentialSource(*ACCESS_KEY)


def at(offset: float) -> datetime:
    # The emulator renders milliseconds; the offsets used here are whole seconds.
    return datetime.fromtimestamp(T0 + offset, tz=UTC)


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[PaiClient]:
    async with PaiClient(endpoint_override=emulator.url, read_timeout=0.5, connect_timeout=1) as pai:
        yield pai


# timeline, age -> status, message, started (offset from now), finished, duration
STATUS_CASES: list[tuple[Timeline, float, RunStatus, str, float | None, float | None, int]] = [
    (Timeline.succeeding(queued=10, running=30), 5, RunStatus.INITIALIZED, "", None, None, 0),
    (Timeline.succeeding(queued=10, running=30), 25, RunStatus.RUNNING, "", -15, None, 15),
    (Timeline.of(("Running", 10), ("Suspended", 50), ("Running", None)), 30, RunStatus.SUSPENDED, "", -30, None, 30),
    (
        Timeline.of(("Running", 10), ("Terminating", 50), ("Terminated", None)),
        20,
        RunStatus.TERMINATING,
        "",
        -20,
        None,
        20,
    ),
    (Timeline.succeeding(queued=2, running=30), 100, RunStatus.SUCCEEDED, "", -98, -68, 30),
    (Timeline.failing("OOMKilled", queued=2, running=8), 100, RunStatus.FAILED, "OOMKilled", -98, -90, 8),
    (Timeline.of(("Running", 5), ("Terminated", None, "by user")), 100, RunStatus.TERMINATED, "by user", -100, -95, 5),
    (Timeline.of(("Initialized", 3), ("Skipped", None)), 100, RunStatus.SKIPPED, "", None, -97, 0),
    (Timeline.of(("Running", 5), ("Unknown", None)), 100, RunStatus.UNKNOWN, "", -100, None, 100),
    (Timeline.of(("Queued", None)), 10, RunStatus.UNRECOGNIZED, "", None, None, 0),
]


@pytest.mark.parametrize(
    ("timeline", "age", "status", "message", "started", "finished", "duration"),
    STATUS_CASES,
    ids=[case[2].value for case in STATUS_CASES],
)
async def test_every_status(
    emulator: Emulator,
    client: PaiClient,
    timeline: Timeline,
    age: float,
    status: RunStatus,
    message: str,
    started: float | None,
    finished: float | None,
    duration: int,
) -> None:
    run = emulator.add_run(timeline, age=age, workspace_id="ws-1", name="nightly")
    got = await client.get_pipeline_run(run.run_id, region=REGION, credentials=CREDS)
    assert got.status is status
    assert got.raw_status == timeline.state_at(age).status
    assert got.pipeline_run_id == run.run_id
    assert (got.name, got.workspace_id, got.node_id) == ("nightly", "ws-1", run.node_id)
    assert got.message == message
    assert got.duration == duration
    assert got.started_at == (at(started) if started is not None else None)
    assert got.finished_at == (at(finished) if finished is not None else None)
    assert got.gmt_create_time == at(-age)
    assert got.request_id is not None and REQUEST_ID.match(got.request_id)
    assert got.manifest is None

    rows = await client.list_pipeline_runs_status("ws-1", [run.run_id], region=REGION, credentials=CREDS)
    assert [(r.pipeline_run_id, r.status) for r in rows.pipeline_runs] == [(run.run_id, status)]


async def test_status_batch_and_list(emulator: Emulator, client: PaiClient) -> None:
    ids = [emulator.add_run(Timeline.running_forever(), workspace_id="ws-b").run_id for _ in range(50)]
    emulator.add_fault("not_found", run_id=ids[7], action="ListPipelineRunsStatus")
    batch = await client.list_pipeline_runs_status("ws-b", [*ids, "flow-unknown"], region=REGION, credentials=CREDS)
    assert [r.pipeline_run_id for r in batch.pipeline_runs] == ids[:7] + ids[8:]
    assert {r.status for r in batch.pipeline_runs} == {RunStatus.RUNNING}
    listed = await client.list_pipeline_runs(region=REGION, credentials=CREDS, workspace_id="ws-b", page_size=20)
    assert listed.total_count == 50
    assert len(listed.pipeline_runs) == 20
    assert emulator.counters.snapshot().actions == {"ListPipelineRunsStatus": 1, "ListPipelineRuns": 1}


async def test_verbose_multi_mib_manifest_and_share_token(emulator: Emulator, client: PaiClient) -> None:
    size = 4 * 1024 * 1024
    run = emulator.add_run(share_token="eyJshare", manifest_size=size)
    with pytest.raises(AuthError) as denied:
        await client.get_pipeline_run(run.run_id, region=REGION, credentials=CREDS, verbose=True)
    assert (denied.value.code, denied.value.http_status) == ("NoPermission", 403)
    got = await client.get_pipeline_run(
        run.run_id, region=REGION, credentials=CREDS, verbose=True, manifest_type="Frozen", token_id="eyJshare"
    )
    assert got.manifest is not None and len(got.manifest) >= size


async def test_sts_token_accepted(emulator: Emulator, client: PaiClient) -> None:
    run = emulator.add_run()
    sts = StaticCredentialSource(*STS_KEY, security_token=STS_TOKEN)
    got = await client.get_pipeline_run(run.run_id, region=REGION, credentials=sts)
    assert got.pipeline_run_id == run.run_id
    emulator.expire_sts_token(STS_TOKEN)
    with pytest.raises(AuthError) as info:
        await client.get_pipeline_run(run.run_id, region=REGION, credentials=sts)
    assert info.value.code == "InvalidSecurityToken.Expired"


FAULT_CASES: list[tuple[FaultKind, dict[str, Any], type[PaiError], int, str | None]] = [
    (FaultKind.UNAVAILABLE, {}, ServerError, 503, "ServiceUnavailable"),
    (FaultKind.INTERNAL, {}, ServerError, 500, "InternalError"),
    (FaultKind.THROTTLE, {}, ThrottledError, 400, "Throttling.User"),
    (FaultKind.THROTTLE, {"status": 429, "retry_after_ms": 100}, ThrottledError, 429, "Throttling.User"),
    (FaultKind.NOT_FOUND, {}, NotFoundError, 404, "PipelineRunNotFound"),
    (FaultKind.BAD_CREDENTIALS, {}, AuthError, 404, "InvalidAccessKeyId.NotFound"),
    (FaultKind.ERROR, {"status": 400, "code": "InvalidParameter"}, BadRequestError, 400, "InvalidParameter"),
    (FaultKind.MALFORMED, {}, MalformedResponseError, 200, None),
]


@pytest.mark.parametrize(
    ("kind", "extra", "error", "http_status", "code"),
    FAULT_CASES,
    ids=[f"{c[0].value}-{c[3]}" for c in FAULT_CASES],
)
async def test_fault_maps_to_error_class(
    emulator: Emulator,
    client: PaiClient,
    kind: FaultKind,
    extra: dict[str, Any],
    error: type[PaiError],
    http_status: int,
    code: str | None,
) -> None:
    run = emulator.add_run()
    emulator.add_fault(kind, run_id=run.run_id, count=1, **extra)
    with pytest.raises(PaiError) as info:
        await client.get_pipeline_run(run.run_id, region=REGION, credentials=CREDS)
    exc = info.value
    assert type(exc) is error
    assert exc.http_status == http_status
    assert exc.code == code
    assert exc.request_id is not None and REQUEST_ID.match(exc.request_id)
    # The fault is spent; the same client recovers on the next call.
    assert (await client.get_pipeline_run(run.run_id, region=REGION, credentials=CREDS)).pipeline_run_id == run.run_id


@pytest.mark.parametrize(
    ("access_key", "secret", "token", "code"),
    [
        ("LTAI5tNoSuchKey", "x", None, "InvalidAccessKeyId.NotFound"),
        (ACCESS_KEY[0], "wrong-secret", None, "SignatureDoesNotMatch"),
        (STS_KEY[0], STS_KEY[1], "CAIS-forged", "InvalidSecurityToken.Malformed"),
    ],
)
async def test_bad_credentials_are_auth_errors(
    emulator: Emulator, client: PaiClient, access_key: str, secret: str, token: str | None, code: str
) -> None:
    run = emulator.add_run()
    with pytest.raises(AuthError) as info:
        await client.get_pipeline_run(
            run.run_id, region=REGION, credentials=StaticCredentialSource(access_key, secret, token)
        )
    assert info.value.code == code
    assert info.value.request_id is not None and REQUEST_ID.match(info.value.request_id)
    assert not info.value.retryable


async def test_qps_limit_is_throttling(emulator: Emulator, client: PaiClient) -> None:
    run = emulator.add_run()
    emulator.set_qps_limit(3, burst=3)
    outcomes = []
    for _ in range(6):
        try:
            await client.get_pipeline_run(run.run_id, region=REGION, credentials=CREDS)
            outcomes.append("ok")
        except ThrottledError as exc:
            assert exc.retryable
            outcomes.append("throttled")
    assert outcomes[:3] == ["ok", "ok", "ok"]
    assert "throttled" in outcomes[3:]


async def test_hang_hits_the_read_timeout(emulator: Emulator, client: PaiClient) -> None:
    run = emulator.add_run()
    emulator.add_fault("hang", run_id=run.run_id, count=1)
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        await client.get_pipeline_run(run.run_id, region=REGION, credentials=CREDS)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 3
    assert info.value.retryable
    assert emulator.counters.snapshot().outcomes == {"Hang": 1}
    assert (await client.get_pipeline_run(run.run_id, region=REGION, credentials=CREDS)).pipeline_run_id == run.run_id


async def test_latency_fault_below_the_timeout_still_succeeds(emulator: Emulator, client: PaiClient) -> None:
    run = emulator.add_run()
    emulator.add_fault("latency", delay=0.2, count=1)
    started = time.monotonic()
    got = await client.get_pipeline_run(run.run_id, region=REGION, credentials=CREDS)
    assert got.status is RunStatus.INITIALIZED
    assert time.monotonic() - started >= 0.2


async def test_node_calls_against_the_emulator(emulator: Emulator, client: PaiClient) -> None:
    nodes = [
        {"name": "prepare", "duration": 5, "logs": ["one", "two"]},
        {"name": "train", "start": 5, "duration": 5, "outputs": [{"name": "m", "type": "Model", "info": {"a": 1}}]},
    ]
    timeline = [["Running", 10], ["Succeeded"]]
    spec = {"id": "flow-nodes", "nodeId": "node-root", "age": 7, "timeline": timeline, "nodes": nodes}
    run = emulator.load_scenario({"runs": [spec]})[0]
    tree = await client.get_pipeline_run_node(run.run_id, "node-root", region=REGION, credentials=CREDS)
    assert [(c.name, c.status_info.status) for c in tree.children] == [
        ("prepare", RunStatus.SUCCEEDED),
        ("train", RunStatus.RUNNING),
    ]
    rows = await client.list_pipeline_run_node_status(run.run_id, "node-root", region=REGION, credentials=CREDS)
    assert [r.node_name for r in rows.status] == [run.name, "prepare", "train"]
    prepare = tree.children[0].node_id
    logs = await client.list_pipeline_run_node_logs(
        run.run_id, prepare, region=REGION, credentials=CREDS, reverse=True, page_size=1
    )
    assert (logs.logs, logs.total_count) == (["two"], 2)
    none_yet = await client.list_pipeline_run_node_outputs(run.run_id, "node-root", region=REGION, credentials=CREDS)
    assert none_yet.outputs == []
    emulator.advance(5)
    got = await client.list_pipeline_run_node_outputs(run.run_id, "node-root", region=REGION, credentials=CREDS)
    assert [(o.name, o.type, o.info) for o in got.outputs] == [("m", "Model", {"a": 1})]
    with pytest.raises(NotFoundError) as missing:
        await client.get_pipeline_run_node(run.run_id, "node-nope", region=REGION, credentials=CREDS)
    assert missing.value.code == "PipelineRunNodeNotFound"
    assert emulator.counters.snapshot().actions == {
        "GetPipelineRunNode": 2,
        "ListPipelineRunNodeStatus": 1,
        "ListPipelineRunNodeLogs": 1,
        "ListPipelineRunNodeOutputs": 2,
    }

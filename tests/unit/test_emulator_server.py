"""The emulator over real HTTP on 127.0.0.1: dispatch, answers, faults, counters, control API, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from paiflow_emulator import Clock, Emulator, FaultKind, Timeline, iso_utc
from paiflow_emulator.testing import sign

AK, SECRET = "LTAI5tUnitKey", "unit-secret"
T0 = 1_700_000_000.0
REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
RUNS = "/api/v1/pipelineruns"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    emulator = Emulator({AK: SECRET}, clock=Clock(frozen_at=T0))
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    emu: Emulator,
    method: str,
    path: str,
    action: str,
    *,
    query: dict[str, str] | None = None,
    body: Any = None,
    **sign_args: Any,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = sign(
        method,
        path,
        action=action,
        host=emu.endpoint,
        access_key_id=sign_args.pop("access_key_id", AK),
        secret=sign_args.pop("secret", SECRET),
        query=query,
        body=body,
        **sign_args,
    )
    async with http.request(method, emu.url + req.target, headers=req.headers, data=req.body or None) as resp:
        text = await resp.text()
        return resp.status, json.loads(text), dict(resp.headers)


async def get_run(
    http: aiohttp.ClientSession, emu: Emulator, run_id: str, **query: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    return await call(http, emu, "GET", f"{RUNS}/{run_id}", "GetPipelineRun", query=query or None)


async def test_get_pipeline_run_and_fresh_request_ids(emu: Emulator, http: aiohttp.ClientSession) -> None:
    run = emu.add_run(Timeline.succeeding(queued=2, running=30), age=12)
    status, body, headers = await get_run(http, emu, run.run_id)
    assert status == 200
    assert body["Status"] == "Running"
    assert body["StartedAt"] == iso_utc(T0 - 10)
    assert body["Duration"] == 10
    assert "Manifest" not in body
    assert REQUEST_ID.match(body["RequestId"])
    assert headers["x-acs-request-id"] == body["RequestId"]
    _, again, _ = await get_run(http, emu, run.run_id)
    assert again["RequestId"] != body["RequestId"]


async def test_verbose_manifest_type_and_share_token(emu: Emulator, http: aiohttp.ClientSession) -> None:
    run = emu.add_run(Timeline.succeeding(), share_token="secret-share")
    status, body, _ = await get_run(http, emu, run.run_id, Verbose="true")
    assert (status, body["Code"]) == (403, "NoPermission")
    status, body, _ = await get_run(
        http, emu, run.run_id, Verbose="True", ManifestType="Rendered", TokenId="secret-share"
    )
    assert status == 200
    assert json.loads(body["Manifest"])["Metadata"]["Annotations"]["paiflow-emulator/manifest-type"] == "Rendered"
    status, body, _ = await get_run(http, emu, run.run_id, ManifestType="Bogus", TokenId="secret-share")
    assert (status, body["Code"]) == (400, "InvalidParameter")


async def test_error_body_shape(emu: Emulator, http: aiohttp.ClientSession) -> None:
    status, body, headers = await get_run(http, emu, "flow-missing")
    assert status == 404
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert body["Code"] == "PipelineRunNotFound"
    assert body["HostId"] == "paiflow.cn-hangzhou.aliyuncs.com"
    assert "flow-missing" in body["Message"]
    assert body["RequestId"] in body["Recommend"]
    assert headers["x-acs-request-id"] == body["RequestId"]


async def test_dispatch_checks_action_version_and_route(emu: Emulator, http: aiohttp.ClientSession) -> None:
    run = emu.add_run()
    status, body, _ = await call(http, emu, "GET", f"{RUNS}/{run.run_id}", "ListPipelineRuns")
    assert (status, body["Code"]) == (404, "InvalidAction.NotFound")
    status, body, _ = await call(http, emu, "DELETE", f"{RUNS}/{run.run_id}", "TerminatePipelineRun")
    assert (status, body["Code"]) == (404, "InvalidAction.NotFound")
    status, body, _ = await call(http, emu, "DELETE", f"{RUNS}/{run.run_id}/start", "DeletePipelineRun")
    assert (status, body["Code"]) == (404, "InvalidAction.NotFound")
    status, body, _ = await call(http, emu, "GET", "/api/v1/other", "GetPipelineRun")
    assert (status, body["Code"]) == (404, "InvalidAction.NotFound")
    status, body, _ = await call(
        http, emu, "GET", f"{RUNS}/{run.run_id}", "GetPipelineRun", extra_headers={"x-acs-version": "2020-01-01"}
    )
    assert (status, body["Code"]) == (400, "InvalidVersion")
    async with http.get(f"{emu.url}{RUNS}/{run.run_id}") as resp:
        assert resp.status == 400
        assert (await resp.json())["Code"] == "MissingParameter"


async def test_signature_errors_over_http(emu: Emulator, http: aiohttp.ClientSession) -> None:
    run = emu.add_run()
    status, body, _ = await call(http, emu, "GET", f"{RUNS}/{run.run_id}", "GetPipelineRun", secret="wrong")
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    status, body, _ = await call(http, emu, "GET", f"{RUNS}/{run.run_id}", "GetPipelineRun", access_key_id="nope")
    assert (status, body["Code"]) == (404, "InvalidAccessKeyId.NotFound")
    status, body, _ = await call(http, emu, "GET", f"{RUNS}/{run.run_id}", "GetPipelineRun", date=time.time() - 3600)
    assert (status, body["Code"]) == (400, "InvalidTimeStamp.Expired")
    status, _, _ = await call(http, emu, "GET", f"{RUNS}/{run.run_id}", "GetPipelineRun", nonce="once")
    assert status == 200
    status, body, _ = await call(http, emu, "GET", f"{RUNS}/{run.run_id}", "GetPipelineRun", nonce="once")
    assert (status, body["Code"]) == (400, "SignatureNonceUsed")


async def test_signature_covers_the_encoded_path_and_query(emu: Emulator, http: aiohttp.ClientSession) -> None:
    run = emu.add_run(run_id="flow-with space")
    status, body, _ = await call(
        http, emu, "GET", f"{RUNS}/flow-with%20space", "GetPipelineRun", query={"TokenId": "a b+c/d~é"}
    )
    assert status == 200, body
    assert body["PipelineRunId"] == run.run_id


async def test_list_pipeline_runs_filters_sorts_and_pages(emu: Emulator, http: aiohttp.ClientSession) -> None:
    for i in range(5):
        emu.add_run(Timeline.succeeding(queued=1, running=10), age=100 + i, workspace_id="ws-a", name=f"train-{i}")
    emu.add_run(Timeline.running_forever(), age=5, workspace_id="ws-a", name="serve", pipeline_id="pipeline-p")
    emu.add_run(Timeline.running_forever(), age=5, workspace_id="ws-b", name="other")
    gone = emu.add_run(age=1, workspace_id="ws-a")
    emu.delete_run(gone.run_id)

    status, body, _ = await call(http, emu, "GET", RUNS, "ListPipelineRuns", query={"WorkspaceId": "ws-a"})
    assert status == 200
    assert body["TotalCount"] == 6
    created = [row["GmtCreateTime"] for row in body["PipelineRuns"]]
    assert created == sorted(created, reverse=True)  # default: newest first

    _, body, _ = await call(
        http,
        emu,
        "GET",
        RUNS,
        "ListPipelineRuns",
        query={"WorkspaceId": "ws-a", "Status": "Succeeded", "PageSize": "2", "PageNumber": "2", "Order": "ASC"},
    )
    assert body["TotalCount"] == 5
    assert [row["Name"] for row in body["PipelineRuns"]] == ["train-2", "train-1"]
    assert {row["Status"] for row in body["PipelineRuns"]} == {"Succeeded"}

    _, body, _ = await call(http, emu, "GET", RUNS, "ListPipelineRuns", query={"PipelineIds": "pipeline-p,x"})
    assert [row["Name"] for row in body["PipelineRuns"]] == ["serve"]
    _, body, _ = await call(http, emu, "GET", RUNS, "ListPipelineRuns", query={"Name": "OTH"})
    assert [row["Name"] for row in body["PipelineRuns"]] == ["other"]
    status, body, _ = await call(http, emu, "GET", RUNS, "ListPipelineRuns", query={"PageSize": "1000"})
    assert (status, body["Code"]) == (400, "InvalidParameter")


@pytest.mark.parametrize("mode", ["transition", "never", "read"])
async def test_gmt_modified_time_modes(emu: Emulator, http: aiohttp.ClientSession, mode: str) -> None:
    emu.modified_time = mode
    # Created 20 s before now (T0): Initialized 2 s, so Running since T0-18; Succeeded from T0+12 on.
    run = emu.add_run(Timeline.succeeding(queued=2, running=30), age=20, workspace_id="ws-m")
    _, body, _ = await call(http, emu, "GET", RUNS, "ListPipelineRuns", query={"WorkspaceId": "ws-m"})
    expected_running = {"transition": T0 - 18, "never": T0 - 20, "read": T0}[mode]
    assert body["PipelineRuns"][0]["GmtModifiedTime"] == iso_utc(expected_running)
    emu.advance(100)
    _, body, _ = await call(http, emu, "GET", RUNS + "/" + run.run_id, "GetPipelineRun")
    expected_end = {"transition": T0 + 12, "never": T0 - 20, "read": T0 + 12}[mode]
    assert (body["Status"], body["GmtModifiedTime"]) == ("Succeeded", iso_utc(expected_end))


async def test_list_hook_sees_every_list_call(emu: Emulator, http: aiohttp.ClientSession) -> None:
    pages: list[str] = []
    emu.list_hook = lambda query: pages.append(query.get("PageNumber", ""))
    for page in ("1", "2"):
        await call(http, emu, "GET", RUNS, "ListPipelineRuns", query={"PageNumber": page})
    assert pages == ["1", "2"]


async def test_list_pipeline_runs_status(emu: Emulator, http: aiohttp.ClientSession) -> None:
    a = emu.add_run(Timeline.running_forever(), workspace_id="ws")
    b = emu.add_run(Timeline.failing("x", queued=0, running=0), age=1, workspace_id="ws")
    c = emu.add_run(workspace_id="ws")
    elsewhere = emu.add_run(workspace_id="other")
    emu.delete_run(c.run_id)
    status, body, _ = await call(
        http,
        emu,
        "PUT",
        RUNS,
        "ListPipelineRunsStatus",
        body={
            "WorkspaceId": "ws",
            "PipelineRuns": [a.run_id, "flow-unknown", b.run_id, c.run_id, elsewhere.run_id],
            "Nodes": [{"PipelineRunId": b.run_id, "NodeId": b.node_id}],
        },
    )
    assert status == 200
    rows = {row["PipelineRunId"]: row for row in body["PipelineRuns"]}
    assert list(rows) == [a.run_id, b.run_id, c.run_id]
    assert rows[a.run_id]["Status"] == "Running"
    assert rows[b.run_id]["Status"] == "Failed"
    assert rows[c.run_id]["IsDeleted"] is True
    assert "Duration" not in rows[a.run_id]
    assert body["Nodes"] == [b.node_row(T0)]
    assert body["Outputs"] == []
    status, body, _ = await call(http, emu, "PUT", RUNS, "ListPipelineRunsStatus", body=b"{not json")
    assert (status, body["Code"]) == (400, "InvalidParameter")


async def test_clock_advance_moves_runs(emu: Emulator, http: aiohttp.ClientSession) -> None:
    run = emu.add_run(Timeline.succeeding(queued=2, running=30))
    assert (await get_run(http, emu, run.run_id))[1]["Status"] == "Initialized"
    emu.advance(10)
    assert (await get_run(http, emu, run.run_id))[1]["Status"] == "Running"
    async with http.post(f"{emu.url}/_emulator/clock/advance", json={"seconds": 60}) as resp:
        clock = await resp.json()
    assert clock["now"] == T0 + 70
    _, body, _ = await get_run(http, emu, run.run_id)
    assert (body["Status"], body["Duration"]) == ("Succeeded", 30)


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        (FaultKind.UNAVAILABLE, 503, "ServiceUnavailable"),
        (FaultKind.INTERNAL, 500, "InternalError"),
        (FaultKind.THROTTLE, 400, "Throttling.User"),
        (FaultKind.NOT_FOUND, 404, "PipelineRunNotFound"),
        (FaultKind.BAD_CREDENTIALS, 404, "InvalidAccessKeyId.NotFound"),
    ],
)
async def test_error_faults(
    emu: Emulator, http: aiohttp.ClientSession, kind: FaultKind, status: int, code: str
) -> None:
    run = emu.add_run()
    emu.add_fault(kind, run_id=run.run_id, count=1)
    got_status, body, _ = await get_run(http, emu, run.run_id)
    assert (got_status, body["Code"]) == (status, code)
    assert (await get_run(http, emu, run.run_id))[0] == 200  # count=1: the next call is fine
    assert emu.counters.snapshot().outcomes == {code: 1, "ok": 1}


async def test_throttle_fault_with_status_and_retry_after(emu: Emulator, http: aiohttp.ClientSession) -> None:
    run = emu.add_run()
    emu.add_fault("throttle", status=429, retry_after_ms=250)
    status, body, headers = await get_run(http, emu, run.run_id)
    assert (status, body["Code"], headers["x-acs-retry-after"]) == (429, "Throttling.User", "250")


async def test_fault_window_on_the_run_clock(emu: Emulator, http: aiohttp.ClientSession) -> None:
    run = emu.add_run()
    emu.add_fault("unavailable", after=10, duration=5)
    assert (await get_run(http, emu, run.run_id))[0] == 200
    emu.advance(12)
    assert (await get_run(http, emu, run.run_id))[0] == 503
    emu.advance(5)
    assert (await get_run(http, emu, run.run_id))[0] == 200


async def test_malformed_fault(emu: Emulator, http: aiohttp.ClientSession) -> None:
    run = emu.add_run()
    emu.add_fault("malformed", count=1)
    req = sign(
        "GET", f"{RUNS}/{run.run_id}", action="GetPipelineRun", host=emu.endpoint, access_key_id=AK, secret=SECRET
    )
    async with http.get(emu.url + req.target, headers=req.headers) as resp:
        assert resp.status == 200
        text = await resp.text()
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert emu.counters.snapshot().outcomes == {"MalformedResponse": 1}


async def test_hang_fault_until_the_client_gives_up(emu: Emulator, http: aiohttp.ClientSession) -> None:
    run = emu.add_run()
    emu.add_fault("hang", count=1)
    req = sign(
        "GET", f"{RUNS}/{run.run_id}", action="GetPipelineRun", host=emu.endpoint, access_key_id=AK, secret=SECRET
    )
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(emu.url + req.target, headers=req.headers, timeout=aiohttp.ClientTimeout(total=0.3)):
            pass
    assert time.monotonic() - started < 2
    assert emu.counters.snapshot().outcomes == {"Hang": 1}
    assert (await get_run(http, emu, run.run_id))[0] == 200


async def test_hang_is_released_by_stop() -> None:
    emulator = Emulator({AK: SECRET})
    await emulator.start()
    emulator.add_fault("hang")
    run = emulator.add_run()
    req = sign(
        "GET", f"{RUNS}/{run.run_id}", action="GetPipelineRun", host=emulator.endpoint, access_key_id=AK, secret=SECRET
    )
    async with aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(session.get(emulator.url + req.target, headers=req.headers))
        await asyncio.sleep(0.1)
        assert not pending.done()
        started = time.monotonic()
        await emulator.stop()
        assert time.monotonic() - started < 3
        # The hung call ends (503 or a dropped connection) instead of outliving the emulator.
        try:
            resp = await asyncio.wait_for(pending, 3)
            outcome: object = resp.status
            resp.release()
        except aiohttp.ClientError as exc:
            outcome = type(exc).__name__
        assert outcome != 200


async def test_latency_is_added(http: aiohttp.ClientSession) -> None:
    async with Emulator({AK: SECRET}, latency=0.15) as emulator:
        run = emulator.add_run()
        emulator.add_fault("latency", delay=0.1, count=1)
        started = time.monotonic()
        assert (await get_run(http, emulator, run.run_id))[0] == 200
        first = time.monotonic() - started
        started = time.monotonic()
        assert (await get_run(http, emulator, run.run_id))[0] == 200
        second = time.monotonic() - started
    assert first >= 0.25
    assert 0.15 <= second < first


async def test_qps_limit_throttles_beyond_the_rate(emu: Emulator, http: aiohttp.ClientSession) -> None:
    run = emu.add_run()
    emu.set_qps_limit(5, burst=5)
    statuses = [(await get_run(http, emu, run.run_id))[0] for _ in range(12)]
    assert statuses.count(200) in (5, 6)  # the burst, plus at most one refilled token
    assert statuses[-1] == 400
    assert emu.counters.snapshot().outcomes["Throttling.User"] == statuses.count(400)
    emu.set_qps_limit(None)
    assert (await get_run(http, emu, run.run_id))[0] == 200


async def test_counters_per_action_run_and_outcome(emu: Emulator, http: aiohttp.ClientSession) -> None:
    a, b = emu.add_run(), emu.add_run()
    await get_run(http, emu, a.run_id)
    await get_run(http, emu, a.run_id)
    await get_run(http, emu, "flow-nope")
    await call(http, emu, "PUT", RUNS, "ListPipelineRunsStatus", body={"PipelineRuns": [a.run_id, b.run_id]})
    async with http.get(f"{emu.url}/_emulator/counters") as resp:
        counters = await resp.json()
    assert counters["total"] == 4
    assert counters["actions"] == {"GetPipelineRun": 3, "ListPipelineRunsStatus": 1}
    assert counters["outcomes"] == {"ok": 3, "PipelineRunNotFound": 1}
    assert counters["runs"] == {a.run_id: 3, "flow-nope": 1, b.run_id: 1}
    assert counters["byAction"]["GetPipelineRun"] == {"ok": 2, "PipelineRunNotFound": 1}
    async with http.post(f"{emu.url}/_emulator/reset-counters") as resp:
        assert resp.status == 200
    assert emu.counters.snapshot().total == 0


async def test_control_api_runs_faults_and_transitions(emu: Emulator, http: aiohttp.ClientSession) -> None:
    base = f"{emu.url}/_emulator"
    async with http.post(
        f"{base}/runs",
        json={"runs": [{"id": "flow-c1", "timeline": [["Running", None]], "age": 30}, {"workspaceId": "w2"}]},
    ) as resp:
        assert resp.status == 201
        ids = [r["id"] for r in (await resp.json())["runs"]]
    assert ids[0] == "flow-c1" and ids[1].startswith("flow-")
    async with http.get(f"{base}/runs/flow-c1") as resp:
        detail = await resp.json()
    assert (detail["Status"], detail["Duration"], detail["IsDeleted"]) == ("Running", 30, False)

    async with http.post(f"{base}/runs/flow-c1/transition", json={"timeline": [["Terminated", None, "bye"]]}) as resp:
        assert (await resp.json())["Status"] == "Terminated"
    _, body, _ = await get_run(http, emu, "flow-c1")
    assert (body["Status"], body["Message"], body["FinishedAt"]) == ("Terminated", "bye", iso_utc(T0))

    # Many at one instant: all or none (an unknown id changes nothing).
    async with http.post(f"{base}/runs", json={"runs": [{"id": f"flow-m{i}", "age": 5} for i in range(3)]}) as resp:
        assert resp.status == 201
    ends = [{"id": f"flow-m{i}", "timeline": [["Failed", None, "stopped"]]} for i in range(3)]
    unknown = {"id": "flow-nope", "timeline": [["Failed", None]]}
    async with http.post(f"{base}/transitions", json={"transitions": [*ends, unknown]}) as r:
        assert r.status == 404 and "flow-nope" in (await r.json())["error"]
    assert (await get_run(http, emu, "flow-m0"))[1]["Status"] != "Failed"
    async with http.post(f"{base}/transitions", json={"transitions": ends}) as resp:
        answer = await resp.json()
    assert [(t["id"], t["Status"]) for t in answer["transitions"]] == [(f"flow-m{i}", "Failed") for i in range(3)]
    assert answer["at"] == T0
    for i in range(3):
        _, body, _ = await get_run(http, emu, f"flow-m{i}")
        assert (body["Status"], body["Message"], body["FinishedAt"]) == ("Failed", "stopped", iso_utc(T0))

    async with http.post(f"{base}/faults", json={"kind": "unavailable", "runId": "flow-c1", "count": 1}) as resp:
        fault_id = (await resp.json())["ids"][0]
    async with http.get(f"{base}/faults") as resp:
        assert [f["id"] for f in (await resp.json())["faults"]] == [fault_id]
    async with http.delete(f"{base}/faults/{fault_id}") as resp:
        assert resp.status == 200
    assert (await get_run(http, emu, "flow-c1"))[0] == 200

    async with http.post(f"{base}/faults", json={"kind": "no-such-kind"}) as resp:
        assert resp.status == 400
    async with http.delete(f"{base}/runs/flow-c1") as resp:
        assert resp.status == 200
    assert (await get_run(http, emu, "flow-c1"))[0] == 404
    async with http.delete(f"{base}/runs/flow-c1?purge=1") as resp:
        assert resp.status == 200
    assert emu.get_run("flow-c1") is None
    async with http.post(f"{base}/config", json={"qpsLimit": 100, "latency": 0}) as resp:
        assert (await resp.json()) == {"latency": 0.0, "qpsLimit": 100.0, "modifiedTime": "transition", "listLag": 0.0}
    async with http.post(f"{base}/config", json={"modifiedTime": "sometimes"}) as resp:
        assert resp.status == 400
    async with http.post(f"{base}/config", json={"listLag": 9}) as resp:
        assert (await resp.json())["listLag"] == 9.0 and emu.list_lag == 9.0
    async with http.post(f"{base}/config", json={"listLag": -1}) as resp:
        assert resp.status == 400 and emu.list_lag == 9.0
    emu.load_scenario({"listLag": 4})
    assert emu.list_lag == 4.0


async def test_control_api_keys_and_tokens(emu: Emulator, http: aiohttp.ClientSession) -> None:
    run = emu.add_run()
    base = f"{emu.url}/_emulator"
    async with http.post(f"{base}/keys", json={"keys": {"STS.k": "s"}, "stsTokens": {"tok": "STS.k"}}) as resp:
        assert resp.status == 200
    sts: dict[str, Any] = {"access_key_id": "STS.k", "secret": "s", "security_token": "tok"}
    assert (await call(http, emu, "GET", f"{RUNS}/{run.run_id}", "GetPipelineRun", **sts))[0] == 200
    async with http.post(f"{base}/sts-tokens/tok/expire") as resp:
        assert resp.status == 200
    status, body, _ = await call(http, emu, "GET", f"{RUNS}/{run.run_id}", "GetPipelineRun", **sts)
    assert (status, body["Code"]) == (400, "InvalidSecurityToken.Expired")
    async with http.delete(f"{base}/keys/{AK}") as resp:
        assert resp.status == 200
    assert (await get_run(http, emu, run.run_id))[1]["Code"] == "InvalidAccessKeyId.NotFound"


async def test_sample_quirks_trailing_newlines(http: aiohttp.ClientSession) -> None:
    async with Emulator({AK: SECRET}, sample_quirks=True) as emulator:
        run = emulator.add_run()
        _, body, _ = await get_run(http, emulator, run.run_id)
    assert body["PipelineRunId"] == run.run_id + "\n"
    assert body["RequestId"].endswith("\n")
    assert not body["Status"].endswith("\n")


async def test_ten_thousand_runs_load_and_answer(emu: Emulator, http: aiohttp.ClientSession) -> None:
    # How fast is the benchmark's business (bench/), not a test's: no timed assertion here.
    emu.load_scenario({"runs": [{"timeline": [["Running", 30], ["Succeeded"]], "age": i % 60} for i in range(10_000)]})
    ids = emu.run_ids()
    assert len(ids) == 10_000
    status, body, _ = await call(http, emu, "PUT", RUNS, "ListPipelineRunsStatus", body={"PipelineRuns": ids[:100]})
    assert status == 200 and len(body["PipelineRuns"]) == 100


def test_cli_serves_the_demo_and_stops_on_sigterm(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "operator")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "paiflow_emulator",
            "--port",
            "0",
            "--keys",
            f"{AK}:{SECRET}",
            "--scenario",
            "demo",
            "--url-file",
            str(url_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert url_file.read_text().strip() == url

        async def probe() -> dict[str, Any]:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/_emulator/runs/flow-demo-fails") as r:
                return dict(await r.json())

        run = asyncio.run(probe())
        assert run["Status"] == "Initialized"
        assert run["WorkspaceId"] == "demo"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not url_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_sets_the_list_lag() -> None:
    from paiflow_emulator.__main__ import parse_args

    assert parse_args(["--list-lag", "27"]).list_lag == 27.0
    assert parse_args([]).list_lag == 0.0

"""PaiClient: endpoints, the loopback-only http rule, wire format against the vendor SDK, timeouts, observer."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from paiflow_operator.pai import (
    PAI_REGIONS,
    AuthError,
    BadRequestError,
    CredentialsError,
    MalformedResponseError,
    NotFoundError,
    PaiClient,
    PaiError,
    RunStatus,
    StaticCredentialSource,
    default_endpoint,
    signing,
)

AK_ID = "LTAI5tAbCdEfGhIjKlMn"
AK_SECRET = "s3cr3t-AK-Secret-Value-0123456789"
STS_TOKEN = "CAIS-sts-token-value"
OK_RUN = {"RequestId": "REQ-1", "PipelineRunId": "flow-1", "Status": "Running"}


class Recorder:
    def __init__(self, body: Any = None, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.body = OK_RUN if body is None else body
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json=self.body)

    @property
    def only(self) -> httpx.Request:
        assert len(self.requests) == 1
        return self.requests[0]


def creds(token: str | None = None) -> StaticCredentialSource:
    return StaticCredentialSource(AK_ID, AK_SECRET, token)


def client_with(recorder: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> PaiClient:
    return PaiClient(transport=httpx.MockTransport(recorder), **kwargs)


def query_of(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.url.query.decode("ascii"), keep_blank_values=True))


# ---------------------------------------------------------------- endpoints


@pytest.mark.parametrize("region", sorted(PAI_REGIONS))
async def test_default_endpoint_is_regional(region: str) -> None:
    rec = Recorder()
    async with client_with(rec) as client:
        await client.get_pipeline_run("flow-1", region=region, credentials=creds())
    assert str(rec.only.url).startswith(f"https://paiflow.{region}.aliyuncs.com/api/v1/pipelineruns/flow-1?")
    assert rec.only.headers["host"] == f"paiflow.{region}.aliyuncs.com"
    assert default_endpoint(region) == f"https://paiflow.{region}.aliyuncs.com"


@pytest.mark.parametrize(
    "region",
    [
        "",
        "CN-HANGZHOU",
        "evil.com/#",
        "cn-hangzhou.evil.com",
        "a",
        "cn hangzhou",
        "cn-hangzhou/",
        "cn-hangzhou\n",
        # Well formed, but paiflow.oss-cn-hangzhou.aliyuncs.com is an OSS bucket's address, not PAI's.
        "oss-cn-hangzhou",
        "cn-shanghai-finance-1",
    ],
)
async def test_invalid_region_rejected_before_any_request(region: str) -> None:
    rec = Recorder()
    async with client_with(rec) as client:
        with pytest.raises(BadRequestError):
            await client.get_pipeline_run("flow-1", region=region, credentials=creds())
    assert rec.requests == []


async def test_an_administrator_can_add_a_region() -> None:
    rec = Recorder()
    async with client_with(rec, extra_regions=["cn-shanghai-finance-1"]) as client:
        await client.get_pipeline_run("flow-1", region="cn-shanghai-finance-1", credentials=creds())
    assert rec.only.headers["host"] == "paiflow.cn-shanghai-finance-1.aliyuncs.com"
    with pytest.raises(ValueError, match="not region ids"):
        PaiClient(extra_regions=["evil.com/#"])


async def test_region_refusal_names_the_setting_and_sends_nothing() -> None:
    rec = Recorder()
    async with client_with(rec) as client:
        with pytest.raises(BadRequestError) as info:
            await client.get_pipeline_run("flow-1", region="oss-cn-hangzhou", credentials=creds())
    assert info.value.code == "RegionNotAllowed"
    assert "PAIFLOW_EXTRA_REGIONS" in str(info.value)
    assert rec.requests == []


@pytest.mark.parametrize(
    ("override", "base", "host"),
    [
        ("https://pai.internal.example:8443", "https://pai.internal.example:8443", "pai.internal.example:8443"),
        ("https://pai.internal.example/", "https://pai.internal.example", "pai.internal.example"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("http://127.10.0.3:9", "http://127.10.0.3:9", "127.10.0.3:9"),
        ("http://localhost:8080", "http://localhost:8080", "localhost:8080"),
        ("http://[::1]:8080", "http://[::1]:8080", "[::1]:8080"),
    ],
)
async def test_endpoint_override_accepted(override: str, base: str, host: str) -> None:
    rec = Recorder()
    async with client_with(rec, endpoint_override=override) as client:
        assert client.endpoint_for("cn-hangzhou") == (base, host)
        await client.get_pipeline_run("flow-1", region="cn-beijing", credentials=creds())
    assert str(rec.only.url).startswith(f"{base}/api/v1/pipelineruns/flow-1")
    assert rec.only.headers["host"] == host


@pytest.mark.parametrize(
    "override",
    [
        "http://paiflow.cn-hangzhou.aliyuncs.com",
        "http://10.0.0.5:8080",
        "http://128.0.0.1",
        "http://localhost.evil.com",
        "http://[::2]:80",
        "ftp://127.0.0.1",
        "127.0.0.1:8080",
        "https://",
        "https://user:pw@host.example",
        "https://host.example/some/path",
        "https://host.example?x=1",
        "https://host.example:99999",
    ],
)
def test_endpoint_override_rejected(override: str) -> None:
    with pytest.raises(ValueError):
        PaiClient(endpoint_override=override)


def test_repr_has_no_secrets_and_names_endpoint() -> None:
    assert "127.0.0.1:8080" in repr(PaiClient(endpoint_override="http://127.0.0.1:8080"))


# ---------------------------------------------------------------- query / body serialisation


@pytest.mark.parametrize(("verbose", "expected"), [(True, "True"), (False, "False")])
async def test_get_pipeline_run_query(verbose: bool, expected: str) -> None:
    rec = Recorder({**OK_RUN, "PipelineRunId": "flow a/b ü"})
    async with client_with(rec) as client:
        await client.get_pipeline_run(
            "flow a/b ü",
            region="cn-hangzhou",
            credentials=creds(),
            verbose=verbose,
            manifest_type="Raw",
            token_id="tok en/ü",
        )
    request = rec.only
    assert request.method == "GET"
    # The run id is one path segment: "/" and non-ASCII are percent-encoded, as the SDK does.
    assert request.url.raw_path.startswith(b"/api/v1/pipelineruns/flow%20a%2Fb%20%C3%BC?")
    assert query_of(request) == {"Verbose": expected, "ManifestType": "Raw", "TokenId": "tok en/ü"}
    # Wire query uses RFC 3986 encoding (%20, not '+'), identical to the canonical query we signed.
    assert request.url.query.decode() == "ManifestType=Raw&TokenId=tok%20en%2F%C3%BC&Verbose=" + expected
    assert request.headers["x-acs-action"] == "GetPipelineRun"
    assert request.headers["x-acs-content-sha256"] == signing.EMPTY_PAYLOAD_SHA256
    assert "content-type" not in request.headers
    assert request.content == b""


async def test_get_pipeline_run_omits_unset_optional_query() -> None:
    rec = Recorder()
    async with client_with(rec) as client:
        await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=creds())
    assert query_of(rec.only) == {"Verbose": "False"}


async def test_list_status_body_and_headers() -> None:
    rec = Recorder(body={"RequestId": "R", "PipelineRuns": [{"PipelineRunId": "flow-1", "Status": "Failed"}]})
    async with client_with(rec) as client:
        result = await client.list_pipeline_runs_status(
            "15945", ("flow-1", "flow-ü"), region="cn-hangzhou", credentials=creds()
        )
    request = rec.only
    assert request.method == "PUT"
    assert request.url.raw_path == b"/api/v1/pipelineruns"
    assert request.content == '{"PipelineRuns":["flow-1","flow-ü"],"WorkspaceId":"15945"}'.encode()
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["x-acs-content-sha256"] == signing.sha256_hex(request.content)
    assert request.headers["x-acs-action"] == "ListPipelineRunsStatus"
    assert result.pipeline_runs[0].status is RunStatus.FAILED


async def test_list_status_rejects_a_bare_string() -> None:
    async with client_with(Recorder()) as client:
        with pytest.raises(TypeError):
            await client.list_pipeline_runs_status("1", "flow-1", region="cn-hangzhou", credentials=creds())


async def test_list_pipeline_runs_query() -> None:
    rec = Recorder(body={"RequestId": "R", "TotalCount": 1, "PipelineRuns": [OK_RUN]})
    async with client_with(rec) as client:
        result = await client.list_pipeline_runs(
            region="cn-hangzhou", credentials=creds(), workspace_id="15945", page_size=20, status="Running"
        )
    assert query_of(rec.only) == {"PageNumber": "1", "PageSize": "20", "WorkspaceId": "15945", "Status": "Running"}
    assert rec.only.headers["x-acs-action"] == "ListPipelineRuns"
    assert result.total_count == 1 and result.pipeline_runs[0].pipeline_run_id == "flow-1"


async def test_common_headers() -> None:
    rec = Recorder()
    before = datetime.now(UTC).replace(microsecond=0)
    async with client_with(rec, user_agent="paiflow-operator/test") as client:
        await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=creds())
        await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=creds())
    first, second = rec.requests
    h = first.headers
    assert h["x-acs-version"] == "2021-02-02"
    assert h["accept"] == "application/json"
    assert h["user-agent"] == "paiflow-operator/test"
    date = datetime.strptime(h["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= date <= datetime.now(UTC) + timedelta(seconds=1)
    assert len(h["x-acs-signature-nonce"]) == 32
    int(h["x-acs-signature-nonce"], 16)
    assert h["x-acs-signature-nonce"] != second.headers["x-acs-signature-nonce"]


# ---------------------------------------------------------------- the SDK as oracle


@pytest.fixture
def sdk_capture() -> Iterator[list[Any]]:
    """Runs the vendor SDK with its HTTP layer replaced, returning the DaraRequests it would send."""
    from darabonba.core import DaraCore
    from darabonba.response import DaraResponse

    captured: list[Any] = []

    def fake_do_action(request: Any, runtime_option: Any = None) -> Any:
        captured.append(request)
        response = DaraResponse()
        response.status_code = 200
        response.headers = {"content-type": "application/json"}
        response.body = json.dumps(
            {"PipelineRunId": "flow-1", "Status": "Running", "PipelineRuns": [], "TotalCount": 0}
        ).encode()
        return response

    original = DaraCore.__dict__["do_action"]
    DaraCore.do_action = staticmethod(fake_do_action)
    try:
        yield captured
    finally:
        DaraCore.do_action = original


def sdk_client() -> Any:
    from alibabacloud_paiflow20210202.client import Client
    from alibabacloud_tea_openapi import models as open_api_models

    config = open_api_models.Config(
        access_key_id=AK_ID,
        access_key_secret=AK_SECRET,
        security_token=STS_TOKEN,
        region_id="cn-hangzhou",
        endpoint="paiflow.cn-hangzhou.aliyuncs.com",
    )
    return Client(config)


# Headers whose values legitimately differ per request or per client library.
VOLATILE = {"x-acs-date", "x-acs-signature-nonce", "user-agent", "authorization"}
# Sent and signed by the SDK only: a telemetry label naming its credential provider ("static_sts").
SDK_ONLY = {"x-acs-credentials-provider"}
# Added unsigned by the HTTP library (requests or httpx), not part of the protocol.
TRANSPORT_ONLY = {"accept-encoding", "connection", "content-length"}


def compare_with_sdk(sdk_request: Any, ours: httpx.Request) -> None:
    sdk_headers = {k.lower(): str(v) for k, v in sdk_request.headers.items()}
    our_headers = {k.lower(): v for k, v in ours.headers.items()}
    assert set(sdk_headers) - SDK_ONLY == set(our_headers) - TRANSPORT_ONLY
    for name in set(sdk_headers) - SDK_ONLY - VOLATILE:
        assert our_headers[name] == sdk_headers[name], name
    raw_path, _, _ = ours.url.raw_path.decode("ascii").partition("?")
    assert ours.method == sdk_request.method
    assert raw_path == sdk_request.pathname
    assert query_of(ours) == dict(sdk_request.query)
    sdk_body = sdk_request.body.encode("utf-8") if isinstance(sdk_request.body, str) else (sdk_request.body or b"")
    assert ours.content == sdk_body
    # Both sign the same set of headers.
    signed = our_headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    sdk_signed = sdk_headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert set(signed) == set(sdk_signed) - SDK_ONLY


@pytest.mark.parametrize("verbose", [True, False])
async def test_get_pipeline_run_matches_sdk(sdk_capture: list[Any], verbose: bool) -> None:
    from alibabacloud_paiflow20210202 import models as m

    sdk_client().get_pipeline_run(
        "flow a/b ü", m.GetPipelineRunRequest(verbose=verbose, manifest_type="Frozen", token_id="t k/ü")
    )
    rec = Recorder({**OK_RUN, "PipelineRunId": "flow a/b ü"})
    async with client_with(rec) as client:
        await client.get_pipeline_run(
            "flow a/b ü",
            region="cn-hangzhou",
            credentials=creds(STS_TOKEN),
            verbose=verbose,
            manifest_type="Frozen",
            token_id="t k/ü",
        )
    compare_with_sdk(sdk_capture[0], rec.only)


async def test_list_pipeline_runs_status_matches_sdk(sdk_capture: list[Any]) -> None:
    from alibabacloud_paiflow20210202 import models as m

    sdk_client().list_pipeline_runs_status(
        m.ListPipelineRunsStatusRequest(workspace_id="15945", pipeline_runs=["flow-1", "flow-ü"])
    )
    rec = Recorder(body={"RequestId": "R", "PipelineRuns": []})
    async with client_with(rec) as client:
        await client.list_pipeline_runs_status(
            "15945", ["flow-1", "flow-ü"], region="cn-hangzhou", credentials=creds(STS_TOKEN)
        )
    compare_with_sdk(sdk_capture[0], rec.only)


async def test_list_pipeline_runs_matches_sdk(sdk_capture: list[Any]) -> None:
    from alibabacloud_paiflow20210202 import models as m

    sdk_client().list_pipeline_runs(
        m.ListPipelineRunsRequest(workspace_id="15945", page_number=2, page_size=50, status="Running", name="a b")
    )
    rec = Recorder(body={"RequestId": "R", "PipelineRuns": [], "TotalCount": 0})
    async with client_with(rec) as client:
        await client.list_pipeline_runs(
            region="cn-hangzhou",
            credentials=creds(STS_TOKEN),
            workspace_id="15945",
            page_number=2,
            status="Running",
            name="a b",
        )
    compare_with_sdk(sdk_capture[0], rec.only)


# ---------------------------------------------------------------- timeouts, pool, observer, lifecycle


async def test_timeouts_reach_every_request() -> None:
    rec = Recorder()
    async with client_with(rec, connect_timeout=2.5, read_timeout=7) as client:
        assert client.timeout.connect == 2.5 and client.timeout.read == 7
        await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=creds())
    timeouts = rec.only.extensions["timeout"]
    assert timeouts["connect"] == 2.5
    assert timeouts["read"] == 7
    assert timeouts["write"] is not None and timeouts["pool"] is not None


def test_default_timeouts() -> None:
    timeout = PaiClient().timeout
    assert (timeout.connect, timeout.read) == (5, 15)


async def test_pool_limit_configured() -> None:
    client = PaiClient(max_connections=7)
    try:
        transport = client._transport
        assert isinstance(transport, httpx.AsyncHTTPTransport)
        assert transport._pool._max_connections == 7
    finally:
        await client.aclose()


@pytest.mark.parametrize("kwargs", [{"connect_timeout": 0}, {"read_timeout": -1}, {"max_connections": 0}])
def test_bad_settings_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PaiClient(**kwargs)


async def test_observer_called_once_per_call_with_outcome() -> None:
    calls: list[tuple[str, str, float]] = []
    responses = iter(
        [
            httpx.Response(200, json=OK_RUN),
            httpx.Response(404, json={"Code": "PipelineRunNotExist", "Message": "gone", "RequestId": "R"}),
        ]
    )
    async with client_with(lambda r: next(responses), observer=lambda *a: calls.append(a)) as client:
        await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=creds())
        with pytest.raises(NotFoundError):
            await client.get_pipeline_run("flow-2", region="cn-hangzhou", credentials=creds())
        with pytest.raises(BadRequestError):
            await client.get_pipeline_run("flow-3", region="bad region", credentials=creds())
    assert [(a, o) for a, o, _ in calls] == [
        ("GetPipelineRun", "ok"),
        ("GetPipelineRun", "RunNotFound"),
        ("GetPipelineRun", "BadRequest"),
    ]
    assert all(seconds >= 0 for _, _, seconds in calls)


async def test_failing_observer_does_not_break_the_call() -> None:
    def observer(action: str, outcome: str, seconds: float) -> None:
        raise RuntimeError("metrics backend down")

    async with client_with(Recorder(), observer=observer) as client:
        run = await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=creds())
    assert run.pipeline_run_id == "flow-1"


async def test_empty_run_id_rejected() -> None:
    rec = Recorder()
    async with client_with(rec) as client:
        with pytest.raises(BadRequestError):
            await client.get_pipeline_run("", region="cn-hangzhou", credentials=creds())
    assert rec.requests == []


async def test_aclose_closes_the_pool() -> None:
    client = client_with(Recorder())
    await client.aclose()
    assert client._http.is_closed


# ---------------------------------------------------------------- answers that must not be mirrored


async def test_an_answer_for_another_run_is_malformed() -> None:
    body = {**OK_RUN, "PipelineRunId": "flow-other", "Status": "Succeeded"}
    async with client_with(Recorder(body)) as client:
        with pytest.raises(MalformedResponseError, match="PipelineRunId"):
            await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=creds())


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"Duration": 1e30}, "Duration"),
        ({"Duration": "1e400"}, "Duration"),
        ({"Duration": -5}, "Duration"),
        ({"Name": "n" * 2_000_000}, "Name"),
        ({"WorkspaceId": "w" * 5000}, "WorkspaceId"),
    ],
)
async def test_an_answer_that_cannot_be_stored_is_malformed_and_names_the_field(
    extra: dict[str, Any], field: str
) -> None:
    async with client_with(Recorder({**OK_RUN, **extra})) as client:
        with pytest.raises(MalformedResponseError) as info:
            await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=creds())
    assert field in str(info.value)
    assert len(str(info.value)) < 1000


# ---------------------------------------------------------------- credential values that cannot be sent

# Each holds the marker SEKRIT, which must never come back in an error.
CONTROL_CHARACTER_VALUES = ["SEKRIT-p1\nSEKRIT-p2", "SEKRIT\rx", "\x00SEKRIT", "SEK RIT", "SEKRÏT"]


@pytest.mark.parametrize("bad", CONTROL_CHARACTER_VALUES)
@pytest.mark.parametrize("where", ["id", "secret", "token"])
async def test_credential_values_that_cannot_travel_in_a_header_are_refused_unquoted(bad: str, where: str) -> None:
    rec = Recorder()
    key_id, secret, token = AK_ID, AK_SECRET, STS_TOKEN
    if where == "id":
        key_id = "LTAI" + bad
    elif where == "secret":
        secret = "S3" + bad
    else:
        token = "CAIS" + bad
    source = StaticCredentialSource(key_id, secret, token)
    async with client_with(rec) as client:
        with pytest.raises(CredentialsError) as info:
            await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=source)
    assert rec.requests == []
    text = f"{info.value} {info.value!r} {info.value.code}"
    assert "SEK" not in text and "LTAI" not in text and "CAIS" not in text


async def test_transport_error_text_never_quotes_what_a_library_echoed() -> None:
    secret_bytes = "b'CAIS-part1\\npart2-very-secret-token-value'"

    def explode(request: httpx.Request) -> httpx.Response:
        raise httpx.LocalProtocolError(f"Illegal header value {secret_bytes}")

    async with client_with(explode) as client:
        with pytest.raises(PaiError) as info:
            await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=creds())
    assert "part2" not in str(info.value) and "CAIS" not in str(info.value)
    assert "LocalProtocolError" in str(info.value)


async def test_create_pipeline_run_matches_sdk(sdk_capture: list[Any]) -> None:
    from alibabacloud_paiflow20210202 import models as m

    fields = {
        "workspace_id": "15945",
        "pipeline_id": "pipeline-ü1",
        "name": "train-6f1c2f4e-0000-4000-8000-000000000001",
        "arguments": '{"arguments":{"parameters":[{"name":"epochs","value":3}]}}',
        "options": '{"mlflow":{"experimentId":"exp-1"}}',
        "accessibility": "PRIVATE",
        "source_id": "6f1c2f4e-0000-4000-8000-000000000001",
    }
    sdk_client().create_pipeline_run(m.CreatePipelineRunRequest(no_confirm_required=True, **fields))
    rec = Recorder(body={"RequestId": "R", "PipelineRunId": "flow-new"})
    async with client_with(rec) as client:
        created = await client.create_pipeline_run(region="cn-hangzhou", credentials=creds(STS_TOKEN), **fields)
    assert created.pipeline_run_id == "flow-new"
    compare_with_sdk(sdk_capture[0], rec.only)
    assert json.loads(rec.only.content)["NoConfirmRequired"] is True


@pytest.mark.parametrize("action", ["start", "terminate", "delete"])
async def test_start_terminate_and_delete_match_sdk(sdk_capture: list[Any], action: str) -> None:
    getattr(sdk_client(), f"{action}_pipeline_run")("flow-a/b ü")
    rec = Recorder(body={"RequestId": "R"})
    async with client_with(rec) as client:
        await getattr(client, f"{action}_pipeline_run")(
            "flow-a/b ü", region="cn-hangzhou", credentials=creds(STS_TOKEN)
        )
    compare_with_sdk(sdk_capture[0], rec.only)


async def test_create_refusal_is_typed_and_redacted() -> None:
    body = {"Code": "PipelineNotExist", "Message": f"no pipeline (key {AK_SECRET})", "RequestId": "R"}
    async with client_with(Recorder(body=body, status=400)) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.create_pipeline_run(
                region="cn-hangzhou", credentials=creds(), workspace_id="1", name="n", pipeline_id="p"
            )
    assert AK_SECRET not in str(caught.value) and "PipelineNotExist" in str(caught.value)


async def test_create_needs_exactly_one_pipeline_source() -> None:
    async with client_with(Recorder()) as client:
        with pytest.raises(BadRequestError):
            await client.create_pipeline_run(region="cn-hangzhou", credentials=creds(), workspace_id="1", name="n")


def _page_server(rows: list[dict[str, Any]], seen: list[dict[str, str]], total: int | None = None) -> Any:
    def answer(request: httpx.Request) -> httpx.Response:
        query = query_of(request)
        seen.append(query)
        number, size = int(query["PageNumber"]), int(query["PageSize"])
        page = rows[(number - 1) * size : number * size]
        count = len(rows) if total is None else total
        return httpx.Response(200, json={"RequestId": f"R{number}", "TotalCount": count, "PipelineRuns": page})

    return answer


async def test_list_all_pipeline_runs_reads_every_page_oldest_first() -> None:
    rows = [{"PipelineRunId": f"flow-{i}", "Status": "Initialized", "Name": "n"} for i in range(7)]
    seen: list[dict[str, str]] = []
    async with client_with(_page_server(rows, seen)) as client:
        listing = await client.list_all_pipeline_runs(
            region="cn-hangzhou", credentials=creds(), workspace_id="1", name="n", source_id="uid", page_size=3
        )
    assert [r.pipeline_run_id for r in listing.pipeline_runs] == [f"flow-{i}" for i in range(7)]
    assert listing.total_count == 7 and listing.request_id == "R3"
    assert [q["PageNumber"] for q in seen] == ["1", "2", "3"]
    assert all(
        (q["SourceId"], q["Name"], q["WorkspaceId"], q["SortBy"], q["Order"])
        == ("uid", "n", "1", "GmtCreateTime", "ASC")
        for q in seen
    )


async def test_list_all_pipeline_runs_is_bounded_and_says_when_it_stopped_short() -> None:
    rows = [{"PipelineRunId": f"flow-{i}", "Status": "Running"} for i in range(10)]
    seen: list[dict[str, str]] = []
    async with client_with(_page_server(rows, seen)) as client:
        listing = await client.list_all_pipeline_runs(
            region="cn-hangzhou", credentials=creds(), page_size=2, max_pages=3
        )
    assert len(seen) == 3 and len(listing.pipeline_runs) == 6 and listing.total_count == 10
    # PAI counting more rows than its pages hold: an empty page ends the walk.
    seen.clear()
    async with client_with(_page_server(rows[:4], seen, total=9)) as client:
        listing = await client.list_all_pipeline_runs(region="cn-hangzhou", credentials=creds(), page_size=2)
    assert len(seen) == 3 and [r.pipeline_run_id for r in listing.pipeline_runs] == [f"flow-{i}" for i in range(4)]
    with pytest.raises(ValueError):
        await client_with(Recorder()).list_all_pipeline_runs(region="cn-hangzhou", credentials=creds(), page_size=0)


async def test_delete_of_an_empty_id_sends_nothing() -> None:
    rec = Recorder()
    async with client_with(rec) as client:
        with pytest.raises(BadRequestError):
            await client.delete_pipeline_run("", region="cn-hangzhou", credentials=creds())
    assert rec.requests == []


# ---------------------------------------------------------------- node calls (issue 19), the SDK as oracle

NODE_OK = {"RequestId": "R", "Metadata": {"NodeId": "node a/ü"}, "Status": [], "Logs": [], "Outputs": []}


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (
            lambda c, **kw: c.get_pipeline_run_node("flow a/b", "node a/ü", depth=4, token_id="t k/ü", **kw),
            lambda s, m: s.get_pipeline_run_node(
                "flow a/b", "node a/ü", m.GetPipelineRunNodeRequest(depth=4, token_id="t k/ü")
            ),
        ),
        (
            lambda c, **kw: c.list_pipeline_run_node_status("flow a/b", "node a/ü", depth=3, **kw),
            lambda s, m: s.list_pipeline_run_node_status(
                "flow a/b", "node a/ü", m.ListPipelineRunNodeStatusRequest(depth=3)
            ),
        ),
        (
            lambda c, **kw: c.list_pipeline_run_node_logs(
                "flow a/b",
                "node a/ü",
                offset=20,
                page_size=50,
                from_time=1700000000,
                to_time=1700000100,
                keyword="loss =",
                reverse=True,
                token_id="tok",
                **kw,
            ),
            lambda s, m: s.list_pipeline_run_node_logs(
                "flow a/b",
                "node a/ü",
                m.ListPipelineRunNodeLogsRequest(
                    offset=20,
                    page_size=50,
                    from_time_in_seconds=1700000000,
                    to_time_in_seconds=1700000100,
                    keyword="loss =",
                    reverse=True,
                    token_id="tok",
                ),
            ),
        ),
        (
            lambda c, **kw: c.list_pipeline_run_node_outputs(
                "flow a/b",
                "node a/ü",
                depth=99999,
                page_number=2,
                page_size=10,
                output_type="Model",
                sort_by="Name",
                order="ASC",
                **kw,
            ),
            lambda s, m: s.list_pipeline_run_node_outputs(
                "flow a/b",
                "node a/ü",
                m.ListPipelineRunNodeOutputsRequest(
                    depth=99999, page_number=2, page_size=10, type="Model", sort_by="Name", order="ASC"
                ),
            ),
        ),
    ],
    ids=["GetPipelineRunNode", "ListPipelineRunNodeStatus", "ListPipelineRunNodeLogs", "ListPipelineRunNodeOutputs"],
)
async def test_node_calls_match_sdk(sdk_capture: list[Any], ours: Any, theirs: Any) -> None:
    from alibabacloud_paiflow20210202 import models as m

    theirs(sdk_client(), m)
    rec = Recorder(body=NODE_OK)
    async with client_with(rec) as client:
        await ours(client, region="cn-hangzhou", credentials=creds(STS_TOKEN))
    compare_with_sdk(sdk_capture[0], rec.only)


async def test_node_answer_for_another_node_is_malformed() -> None:
    rec = Recorder(body={"RequestId": "R", "Metadata": {"NodeId": "node-other"}})
    async with client_with(rec) as client:
        with pytest.raises(MalformedResponseError, match="node-other"):
            await client.get_pipeline_run_node("flow-1", "node-1", region="cn-hangzhou", credentials=creds())


@pytest.mark.parametrize(
    "call",
    [
        lambda c, **kw: c.get_pipeline_run_node("flow-1", "", **kw),
        lambda c, **kw: c.list_pipeline_run_node_status("", "node-1", **kw),
        lambda c, **kw: c.list_pipeline_run_node_logs("flow-1", "node-1", page_size=0, **kw),
        lambda c, **kw: c.list_pipeline_run_node_logs("flow-1", "node-1", offset=-1, **kw),
        lambda c, **kw: c.list_pipeline_run_node_outputs("flow-1", "node-1", depth=0, **kw),
        lambda c, **kw: c.get_pipeline_run_node("flow-1", "node-1", depth=0, **kw),
    ],
)
async def test_bad_node_call_arguments_send_nothing(call: Any) -> None:
    rec = Recorder(body=NODE_OK)
    async with client_with(rec) as client:
        with pytest.raises(BadRequestError):
            await call(client, region="cn-hangzhou", credentials=creds())
    assert rec.requests == []


async def test_node_call_errors_are_redacted() -> None:
    # PAI's message may quote the query it got, share token included.
    body = {"Code": "NoPermission", "Message": "denied for TokenId=eyJshareTokenValue123 key", "RequestId": "R"}
    async with client_with(Recorder(body=body, status=403)) as client:
        with pytest.raises(AuthError) as caught:
            await client.list_pipeline_run_node_logs(
                "flow-1", "node-1", region="cn-hangzhou", credentials=creds(), token_id="eyJshareTokenValue123"
            )
    assert "eyJshareTokenValue123" not in str(caught.value) and "<redacted>" in str(caught.value)


async def test_a_node_tree_nested_past_the_json_parser_is_malformed_not_a_crash() -> None:
    deep = '{"Metadata":{"NodeId":"n"},"Spec":{"Pipelines":[' * 3000 + "]}}" * 3000

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=deep.encode(), headers={"content-type": "application/json"})

    async with client_with(answer) as client:
        with pytest.raises(MalformedResponseError):
            await client.get_pipeline_run_node("flow-1", "n", region="cn-hangzhou", credentials=creds())

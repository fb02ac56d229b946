"""Error classification (HTTP status + PAI Code, transport failures, malformed bodies) and secret hygiene."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from paiflow_operator.pai import (
    AuthError,
    BadRequestError,
    Credentials,
    CredentialsError,
    DefaultChainSource,
    MalformedResponseError,
    NotFoundError,
    PaiClient,
    PaiError,
    ServerError,
    StaticCredentialSource,
    ThrottledError,
    TransportError,
    classify_error,
)

AK_ID = "LTAI5tAbCdEfGhIjKlMn"
AK_SECRET = "s3cr3t-AK-Secret-Value-0123456789"
STS_TOKEN = "CAIS-sts-token-value-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SHARE_TOKEN = "eyJ0eXAiOiJKV1Qi.share token/ü"
SECRETS = (AK_SECRET, STS_TOKEN, SHARE_TOKEN)


def creds() -> StaticCredentialSource:
    return StaticCredentialSource(AK_ID, AK_SECRET, STS_TOKEN)


async def call_get(handler: Callable[[httpx.Request], httpx.Response]) -> PaiError:
    observed: list[tuple[str, str, float]] = []
    async with PaiClient(transport=httpx.MockTransport(handler), observer=lambda *a: observed.append(a)) as client:
        with pytest.raises(PaiError) as info:
            await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=creds(), token_id=SHARE_TOKEN)
    # The observer sees exactly one outcome per call, named by the error kind.
    assert [(a, o) for a, o, _ in observed] == [("GetPipelineRun", info.value.kind.value)]
    return info.value


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Callable[..., httpx.Response]:
    return lambda request: httpx.Response(status, json=body, headers=headers)


def pai_error_body(code: str, message: str = "something went wrong") -> dict[str, str]:
    return {"Code": code, "Message": message, "RequestId": "REQ-123", "HostId": "paiflow.cn-hangzhou.aliyuncs.com"}


CASES: list[tuple[int, str | None, type[PaiError]]] = [
    (400, "Throttling.User", ThrottledError),
    (503, "Throttling", ThrottledError),
    (429, "TooManyRequests", ThrottledError),
    (429, None, ThrottledError),
    (404, "PipelineRunNotExist", NotFoundError),
    (400, "PipelineRunNotExist", NotFoundError),
    (404, "EntityNotFound.PipelineRun", NotFoundError),
    (404, "SomethingElse", NotFoundError),
    (404, "InvalidAccessKeyId.NotFound", AuthError),
    (400, "SignatureDoesNotMatch", AuthError),
    (400, "IncompleteSignature", AuthError),
    (400, "InvalidSecurityToken.Expired", AuthError),
    (403, "Forbidden.RAM", AuthError),
    (403, "NoPermission", AuthError),
    (401, "Whatever", AuthError),
    (403, None, AuthError),
    (404, "InvalidAction.NotFound", BadRequestError),
    (404, "InvalidApi.NotFound", BadRequestError),
    (400, "InvalidParameter", BadRequestError),
    (409, "Conflict", BadRequestError),
    (500, "InternalError", ServerError),
    (502, None, ServerError),
    (503, "ServiceUnavailable", ServerError),
]


@pytest.mark.parametrize(("status", "code", "expected"), CASES)
async def test_http_error_classification(status: int, code: str | None, expected: type[PaiError]) -> None:
    body: dict[str, str] = pai_error_body(code) if code else {"RequestId": "REQ-123"}
    err = await call_get(json_response(status, body))
    assert type(err) is expected
    assert err.http_status == status
    assert err.code == code
    assert err.request_id == "REQ-123"
    assert classify_error(status, code) is expected


@pytest.mark.parametrize(
    ("error_cls", "retryable"),
    [
        (ThrottledError, True),
        (ServerError, True),
        (TransportError, True),
        (MalformedResponseError, True),
        (NotFoundError, False),
        (AuthError, False),
        (BadRequestError, False),
        (CredentialsError, False),
    ],
)
def test_retryable_flags(error_cls: type[PaiError], retryable: bool) -> None:
    assert error_cls("x").retryable is retryable


async def test_request_id_falls_back_to_response_header() -> None:
    err = await call_get(lambda r: httpx.Response(500, text="<html>oops</html>", headers={"x-acs-request-id": "HDR-9"}))
    assert isinstance(err, ServerError)
    assert err.request_id == "HDR-9"
    assert err.code is None


async def test_404_without_pai_error_body_is_not_run_not_found() -> None:
    # An HTML 404 comes from something in front of PAI; it must not make a run look deleted.
    err = await call_get(lambda r: httpx.Response(404, text="<html>Not Found</html>"))
    assert isinstance(err, BadRequestError)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ReadTimeout("timed out"), TransportError),
        (httpx.ConnectTimeout("timed out"), TransportError),
        (httpx.PoolTimeout("pool"), TransportError),
        (httpx.ConnectError("connection refused"), TransportError),
        (httpx.ReadError("connection reset by peer"), TransportError),
        (httpx.RemoteProtocolError("server disconnected"), TransportError),
        (httpx.ProxyError("proxy refused"), TransportError),
        (ConnectionResetError(104, "Connection reset by peer"), TransportError),
        (httpx.DecodingError("bad gzip"), MalformedResponseError),
    ],
)
async def test_transport_errors(exc: Exception, expected: type[PaiError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    err = await call_get(handler)
    assert type(err) is expected
    assert err.retryable
    assert err.__suppress_context__  # the httpx exception (holding the request) is not chained


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="not json"),
        httpx.Response(200, text=""),
        httpx.Response(200, json=["a", "list"]),
        httpx.Response(200, json={"RequestId": "REQ-123", "Status": "Running"}),
        httpx.Response(200, json={"RequestId": "REQ-123", "PipelineRunId": "flow-1"}),
        httpx.Response(
            200, json={"RequestId": "REQ-123", "PipelineRunId": "flow-1", "Status": "Running", "StartedAt": "x"}
        ),
        httpx.Response(302, headers={"location": "https://elsewhere.example/"}),
    ],
)
async def test_malformed_responses(response: httpx.Response) -> None:
    err = await call_get(lambda r: response)
    assert isinstance(err, MalformedResponseError)
    assert err.retryable


async def test_malformed_response_keeps_request_id() -> None:
    err = await call_get(json_response(200, {"RequestId": "REQ-123", "Status": "Running"}))
    assert err.request_id == "REQ-123"
    assert "PipelineRunId" in str(err)


# ---------------------------------------------------------------- secrets never leak


def _leaky_handler(kind: str) -> Callable[[httpx.Request], httpx.Response]:
    """Responses and failures that echo every secret back, as a hostile or chatty server might."""
    echo = f"string to sign: GET ... TokenId={SHARE_TOKEN} x-acs-security-token:{STS_TOKEN} key {AK_SECRET}"

    def handler(request: httpx.Request) -> httpx.Response:
        auth = request.headers["authorization"]
        full = f"{echo} auth={auth} url={request.url}"
        if kind == "transport":
            raise httpx.ConnectError(full, request=request)
        if kind == "timeout":
            raise httpx.ReadTimeout(full, request=request)
        if kind == "malformed":
            return httpx.Response(200, json={"RequestId": "R", "Status": 123, "Message": full})
        status, code = {
            "throttled": (400, "Throttling.User"),
            "notfound": (404, "PipelineRunNotExist"),
            "auth": (400, "SignatureDoesNotMatch"),
            "badrequest": (400, "InvalidParameter"),
            "server": (500, "InternalError"),
        }[kind]
        return httpx.Response(status, json={"Code": code, "Message": full, "RequestId": "REQ-1"})

    return handler


def _assert_clean(text: str) -> None:
    from paiflow_operator.pai import signing

    for secret in SECRETS:
        assert secret not in text
        assert signing.percent_encode(secret) not in text
    assert "Signature=" not in text


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("transport", TransportError),
        ("timeout", TransportError),
        ("malformed", MalformedResponseError),
        ("throttled", ThrottledError),
        ("notfound", NotFoundError),
        ("auth", AuthError),
        ("badrequest", BadRequestError),
        ("server", ServerError),
    ],
)
async def test_no_secret_in_errors_or_logs(
    kind: str, expected: type[PaiError], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    err = await call_get(_leaky_handler(kind))
    assert type(err) is expected
    rendered = [
        str(err),
        repr(err),
        repr(err.args),
        err.message,
        str(err.code),
        "".join(traceback.format_exception(err)),
        f"{err!s} {err!r}",
    ]
    logging.getLogger("test").exception("reconcile failed: %s", err, exc_info=err)
    rendered += [r.getMessage() for r in caplog.records]
    rendered += [caplog.text]
    for text in rendered:
        _assert_clean(text)


async def test_auth_error_still_says_what_happened() -> None:
    # Redaction must not swallow the useful part of PAI's message.
    err = await call_get(_leaky_handler("auth"))
    assert "string to sign" in str(err)
    assert "<redacted>" in str(err)
    assert err.code == "SignatureDoesNotMatch"


async def test_credential_source_failure_does_not_leak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    class Leaky:
        async def get(self) -> Credentials:
            raise RuntimeError(f"could not parse secret {AK_SECRET} token {STS_TOKEN}")

    async with PaiClient(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as client:
        with pytest.raises(CredentialsError) as info:
            await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=Leaky())
    err = info.value
    for text in (str(err), repr(err), "".join(traceback.format_exception(err)), caplog.text):
        _assert_clean(text)
    assert not err.retryable


async def test_default_chain_failure_does_not_leak() -> None:
    def factory() -> Any:
        raise ValueError(f"profile parse error near access_key_secret = {AK_SECRET}{STS_TOKEN}")

    with pytest.raises(CredentialsError) as info:
        await DefaultChainSource(provider_factory=factory).get()
    err = info.value
    for text in (str(err), repr(err), "".join(traceback.format_exception(err))):
        _assert_clean(text)
    assert "ValueError" in str(err)


def test_error_str_carries_code_status_and_request_id() -> None:
    err = ThrottledError("slow down", code="Throttling.User", http_status=400, request_id="REQ-7")
    assert str(err) == "slow down code=Throttling.User http=400 requestId=REQ-7"
    assert repr(err).startswith("ThrottledError(")

"""Our ACS3-HMAC-SHA256 signer against the vendor SDK's own implementation, byte for byte."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
from alibabacloud_tea_openapi.utils import Utils as SdkUtils
from darabonba.request import DaraRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paiflow_operator.pai import PaiClient, StaticCredentialSource, signing

SIGN_TYPE = "ACS3-HMAC-SHA256"


def sdk_authorization(
    method: str,
    pathname: str,
    query: dict[str, str | None],
    headers: dict[str, str | None],
    payload_sha256: str,
    ak: str,
    secret: str,
) -> str:
    # The SDK signs the DaraRequest it is about to send (alibabacloud_tea_openapi.client.do_request).
    request = DaraRequest()
    request.method = method
    request.pathname = pathname
    request.query = dict(query)
    request.headers = dict(headers)
    result: str = SdkUtils.get_authorization(request, SIGN_TYPE, payload_sha256, ak, secret)
    return result


# Text that exercises percent-encoding: spaces, slashes, reserved and non-ASCII characters.
tricky_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=24)
run_ids = st.one_of(
    st.from_regex(r"flow-[a-z0-9]{4,16}", fullmatch=True),
    tricky_text.filter(bool),
)
header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)
header_values = st.one_of(st.none(), tricky_text, st.integers().map(str))
query_keys = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,15}", fullmatch=True)
query_values = st.one_of(st.none(), tricky_text, st.sampled_from(["True", "False", "50", "a b", "ü ö"]))
secrets = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE"]),
    run_id=run_ids,
    suffix=st.sampled_from(["", "/nodes/node-1/status", "/termination"]),
    query=st.dictionaries(query_keys, query_values, max_size=6),
    headers=st.dictionaries(header_names, header_values, max_size=8),
    payload=st.binary(max_size=256),
    ak=secrets,
    secret=secrets,
)
def test_authorization_matches_sdk(
    method: str,
    run_id: str,
    suffix: str,
    query: dict[str, str | None],
    headers: dict[str, str | None],
    payload: bytes,
    ak: str,
    secret: str,
) -> None:
    path = f"/api/v1/pipelineruns/{signing.percent_encode(run_id)}{suffix}"
    payload_hash = signing.sha256_hex(payload)
    ours = signing.authorization(method, path, query, headers, payload_hash, ak, secret)
    assert ours == sdk_authorization(method, path, query, headers, payload_hash, ak, secret)


@given(run_id=run_ids)
def test_path_encoding_matches_sdk(run_id: str) -> None:
    from alibabacloud_openapi_util.client import Client as OpenApiUtilClient  # type: ignore[import-untyped]

    assert signing.percent_encode(run_id) == OpenApiUtilClient.get_encode_param(run_id)


def test_headers_differing_only_in_case_are_merged_like_the_sdk() -> None:
    headers: dict[str, str | None] = {"X-Acs-Foo": " b ", "x-acs-foo": "a", "Host": "h", "skip": None}
    ours = signing.authorization("GET", "/", {}, headers, signing.EMPTY_PAYLOAD_SHA256, "ak", "sk")
    assert ours == sdk_authorization("GET", "/", {}, headers, signing.EMPTY_PAYLOAD_SHA256, "ak", "sk")
    assert "SignedHeaders=host;x-acs-foo," in ours


def test_empty_path_signs_as_root() -> None:
    ours = signing.authorization("GET", "", {}, {"host": "h"}, signing.EMPTY_PAYLOAD_SHA256, "ak", "sk")
    assert ours == signing.authorization("GET", "/", {}, {"host": "h"}, signing.EMPTY_PAYLOAD_SHA256, "ak", "sk")


def test_empty_payload_hash_constant() -> None:
    assert hashlib.sha256(b"").hexdigest() == signing.EMPTY_PAYLOAD_SHA256


def _resign_wire_request_with_sdk(request: httpx.Request, secret: str) -> tuple[str, str]:
    """Re-signs what actually went over the wire with the SDK's signer. Returns (sent, recomputed)."""
    sent = request.headers["authorization"]
    ak = sent.split("Credential=", 1)[1].split(",", 1)[0]
    signed_names = sent.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    raw_path, _, raw_query = request.url.raw_path.decode("ascii").partition("?")
    # What a server sees: the decoded query parameters and the signed headers' values.
    query: dict[str, str | None] = dict(parse_qsl(raw_query, keep_blank_values=True))
    headers: dict[str, str | None] = {name: request.headers[name] for name in signed_names}
    body_hash = hashlib.sha256(request.content).hexdigest()
    assert request.headers["x-acs-content-sha256"] == body_hash
    recomputed = sdk_authorization(request.method, raw_path, query, headers, body_hash, ak, secret)
    return sent, recomputed


async def _capture(call: Any) -> httpx.Request:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        # GetPipelineRun's answer must carry the id asked for: the last path segment, decoded.
        run_id = unquote(request.url.raw_path.decode("ascii").split("?")[0].rsplit("/", 1)[-1])
        return httpx.Response(
            200, json={"PipelineRunId": run_id, "Status": "Running", "PipelineRuns": [], "TotalCount": 0}
        )

    async with PaiClient(transport=httpx.MockTransport(handler)) as client:
        await call(client)
    assert len(seen) == 1
    return seen[0]


SDK_HEADER_SET = {
    "accept",
    "host",
    "user-agent",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
}


async def test_get_pipeline_run_wire_request_verifies_with_sdk_signer() -> None:
    creds = StaticCredentialSource("LTAI5tExampleKey", "example-secret", "sts-token-value")
    request = await _capture(
        lambda c: c.get_pipeline_run(
            "flow a/b ü",
            region="cn-hangzhou",
            credentials=creds,
            verbose=True,
            manifest_type="Raw",
            token_id="share token/ü",
        )
    )
    sent, recomputed = _resign_wire_request_with_sdk(request, "example-secret")
    assert sent == recomputed
    signed = set(sent.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";"))
    assert signed == SDK_HEADER_SET | {"x-acs-accesskey-id", "x-acs-security-token"}
    assert urlsplit(str(request.url)).hostname == "paiflow.cn-hangzhou.aliyuncs.com"


async def test_list_status_put_with_body_verifies_with_sdk_signer() -> None:
    creds = StaticCredentialSource("LTAI5tExampleKey", "example-secret")
    request = await _capture(
        lambda c: c.list_pipeline_runs_status("15945", ["flow-1", "flow-ü"], region="cn-shanghai", credentials=creds)
    )
    sent, recomputed = _resign_wire_request_with_sdk(request, "example-secret")
    assert sent == recomputed
    signed = set(sent.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";"))
    assert signed == SDK_HEADER_SET | {"content-type"}
    assert request.headers["content-type"] == "application/json; charset=utf-8"


async def test_wrong_secret_does_not_verify() -> None:
    # Guards the two tests above against passing vacuously.
    creds = StaticCredentialSource("LTAI5tExampleKey", "example-secret")
    request = await _capture(lambda c: c.list_pipeline_runs(region="cn-hangzhou", credentials=creds, workspace_id="1"))
    sent, recomputed = _resign_wire_request_with_sdk(request, "another-secret")
    assert sent != recomputed

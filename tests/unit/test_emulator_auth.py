"""The emulator's ACS3 signature verification: accepts what the SDK signs, rejects every tampering."""

from __future__ import annotations

import dataclasses

import pytest

from paiflow_emulator.auth import AuthFailure, Caller, Verifier, collect_headers
from paiflow_emulator.testing import SignedRequest, sign

NOW = 1_700_000_000.0
AK, SECRET = "LTAI5tTestKey", "test-secret"
STS_AK, STS_SECRET, TOKEN = "STS.tempkey", "temp-secret", "CAIS-token-value"
HOST = "127.0.0.1:8080"
RUN_PATH = "/api/v1/pipelineruns/flow-abc"


class Wall:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
def verifier(wall: Wall) -> Verifier:
    return Verifier({AK: SECRET, STS_AK: STS_SECRET}, {TOKEN: STS_AK}, max_skew=900, wall=wall)


def signed(**overrides: object) -> SignedRequest:
    args: dict[str, object] = {
        "action": "GetPipelineRun",
        "host": HOST,
        "access_key_id": AK,
        "secret": SECRET,
        "query": {"Verbose": "true", "TokenId": "a b/c+d"},
        "date": NOW,
    }
    args.update(overrides)
    method = str(args.pop("method", "GET"))
    path = str(args.pop("path", RUN_PATH))
    return sign(method, path, **args)  # type: ignore[arg-type]


def verify(verifier: Verifier, req: SignedRequest) -> Caller:
    return verifier.verify(req.method, req.path, req.query, collect_headers(req.headers.items()), req.body)


def code_of(verifier: Verifier, req: SignedRequest) -> str:
    with pytest.raises(AuthFailure) as info:
        verify(verifier, req)
    return info.value.error.code


def test_accepts_a_correctly_signed_request(verifier: Verifier) -> None:
    assert verify(verifier, signed()) == Caller(AK, None)


def test_accepts_a_signed_json_body(verifier: Verifier) -> None:
    req = signed(method="PUT", path="/api/v1/pipelineruns", action="ListPipelineRunsStatus", query={}, body={"a": 1})
    assert verify(verifier, req).access_key_id == AK


def test_rejects_a_tampered_path(verifier: Verifier) -> None:
    req = dataclasses.replace(signed(), path="/api/v1/pipelineruns/flow-other")
    assert code_of(verifier, req) == "SignatureDoesNotMatch"


def test_rejects_a_tampered_query(verifier: Verifier) -> None:
    req = signed()
    req.query["Verbose"] = "false"
    assert code_of(verifier, req) == "SignatureDoesNotMatch"
    added = signed()
    added.query["ManifestType"] = "Frozen"
    assert code_of(verifier, added) == "SignatureDoesNotMatch"


def test_rejects_a_tampered_body_even_with_a_matching_hash_header(verifier: Verifier) -> None:
    req = signed(method="PUT", path="/api/v1/pipelineruns", action="ListPipelineRunsStatus", query={}, body={"a": 1})
    assert code_of(verifier, dataclasses.replace(req, body=b'{"a": 2}')) == "SignatureDoesNotMatch"
    # Recomputing x-acs-content-sha256 for the new body breaks the signature instead.
    from paiflow_operator.pai.signing import sha256_hex

    req.headers["x-acs-content-sha256"] = sha256_hex(b'{"a": 2}')
    assert code_of(verifier, dataclasses.replace(req, body=b'{"a": 2}')) == "SignatureDoesNotMatch"


def test_rejects_a_tampered_signed_header(verifier: Verifier) -> None:
    req = signed()
    req.headers["accept"] = "text/xml"
    assert code_of(verifier, req) == "SignatureDoesNotMatch"
    host = signed()
    host.headers["host"] = "evil.example:80"
    assert code_of(verifier, host) == "SignatureDoesNotMatch"


def test_rejects_an_unsigned_acs_header(verifier: Verifier) -> None:
    req = signed()
    req.headers["x-acs-extra"] = "smuggled"
    assert code_of(verifier, req) == "IncompleteSignature"


def test_unsigned_non_acs_headers_are_ignored(verifier: Verifier) -> None:
    req = signed()
    req.headers["user-agent"] = "whatever"  # not in SignedHeaders: proxies may add such headers
    assert verify(verifier, req).access_key_id == AK


def test_wrong_secret_and_unknown_key(verifier: Verifier) -> None:
    assert code_of(verifier, signed(secret="not-the-secret")) == "SignatureDoesNotMatch"
    with pytest.raises(AuthFailure) as info:
        verify(verifier, signed(access_key_id="LTAIunknown"))
    assert (info.value.error.status, info.value.error.code) == (404, "InvalidAccessKeyId.NotFound")


def test_missing_or_malformed_authorization(verifier: Verifier) -> None:
    req = signed()
    del req.headers["Authorization"]
    assert code_of(verifier, req) == "IncompleteSignature"
    garbled = signed()
    garbled.headers["Authorization"] = "ACS3-HMAC-SHA256 nonsense"
    assert code_of(verifier, garbled) == "IncompleteSignature"
    other_alg = signed()
    other_alg.headers["Authorization"] = other_alg.headers["Authorization"].replace("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3")
    assert code_of(verifier, other_alg) == "InvalidSignatureMethod"


@pytest.mark.parametrize("offset", [-901, 901])
def test_rejects_skew_beyond_the_limit(verifier: Verifier, offset: float) -> None:
    assert code_of(verifier, signed(date=NOW + offset)) == "InvalidTimeStamp.Expired"


@pytest.mark.parametrize("offset", [-899, 899])
def test_accepts_skew_within_the_limit(verifier: Verifier, offset: float) -> None:
    assert verify(verifier, signed(date=NOW + offset)).access_key_id == AK


def test_rejects_an_unparseable_date(verifier: Verifier) -> None:
    req = signed()
    req.headers["x-acs-date"] = "yesterday"
    assert code_of(verifier, req) == "InvalidTimeStamp.Format"


def test_nonce_reuse_within_the_window(verifier: Verifier, wall: Wall) -> None:
    first = signed(nonce="n-1")
    verify(verifier, first)
    assert code_of(verifier, first) == "SignatureNonceUsed"
    # Same nonce, new date: still a replay.
    wall.now += 60
    assert code_of(verifier, signed(nonce="n-1", date=wall.now)) == "SignatureNonceUsed"


def test_nonce_is_forgotten_once_no_date_could_be_accepted(verifier: Verifier, wall: Wall) -> None:
    original = signed(nonce="n-2")
    verify(verifier, original)
    wall.now += 900  # the edge of the window: the date still passes, so the nonce must still be known
    assert code_of(verifier, original) == "SignatureNonceUsed"
    wall.now += 1
    # The replay now fails on its date, so the emulator no longer needs to remember the nonce...
    assert code_of(verifier, original) == "InvalidTimeStamp.Expired"
    assert verify(verifier, signed(nonce="n-2", date=wall.now)).access_key_id == AK
    assert len(verifier._nonces) == 1  # ...and has dropped it (only the new request's nonce is left)


def test_forged_requests_do_not_burn_nonces(verifier: Verifier) -> None:
    assert code_of(verifier, signed(nonce="n-3", secret="wrong")) == "SignatureDoesNotMatch"
    assert verify(verifier, signed(nonce="n-3")).access_key_id == AK


def test_sts_token_accepted(verifier: Verifier) -> None:
    caller = verify(verifier, signed(access_key_id=STS_AK, secret=STS_SECRET, security_token=TOKEN))
    assert caller == Caller(STS_AK, TOKEN)


def test_sts_token_errors(verifier: Verifier) -> None:
    unknown = signed(access_key_id=STS_AK, secret=STS_SECRET, security_token="CAIS-unknown")
    assert code_of(verifier, unknown) == "InvalidSecurityToken.Malformed"
    foreign = signed(security_token=TOKEN)  # the token belongs to STS_AK
    assert code_of(verifier, foreign) == "InvalidSecurityToken.MismatchWithAccessKey"
    assert code_of(verifier, signed(access_key_id=STS_AK, secret=STS_SECRET)) == "MissingSecurityToken"
    verifier.expire_sts_token(TOKEN)
    expired = signed(access_key_id=STS_AK, secret=STS_SECRET, security_token=TOKEN)
    assert code_of(verifier, expired) == "InvalidSecurityToken.Expired"


def test_token_header_must_be_signed(verifier: Verifier) -> None:
    req = signed()
    req.headers["x-acs-security-token"] = TOKEN
    # Unknown-to-the-signer token for a long-term key: the token check fires before the header check.
    assert code_of(verifier, req) == "InvalidSecurityToken.MismatchWithAccessKey"
    sts = signed(access_key_id=STS_AK, secret=STS_SECRET, security_token=TOKEN)
    auth = sts.headers["Authorization"]
    sts.headers["Authorization"] = auth.replace(";x-acs-security-token", "")
    assert code_of(verifier, sts) == "IncompleteSignature"


def test_keys_can_be_added_and_revoked(verifier: Verifier) -> None:
    verifier.add_key("LTAInew", "s2")
    assert verify(verifier, signed(access_key_id="LTAInew", secret="s2")).access_key_id == "LTAInew"
    verifier.remove_key("LTAInew")
    assert code_of(verifier, signed(access_key_id="LTAInew", secret="s2")) == "InvalidAccessKeyId.NotFound"


def test_repeated_header_values_are_signed_sorted_and_joined(verifier: Verifier) -> None:
    req = signed()
    headers = collect_headers([*req.headers.items(), ("Accept", "application/xml")])
    # The client signed a single "accept" value; a second one sneaking in changes the canonical form.
    with pytest.raises(AuthFailure) as info:
        verifier.verify(req.method, req.path, req.query, headers, req.body)
    assert info.value.error.code == "SignatureDoesNotMatch"

"""AssumeRole end to end below Kubernetes: alibabacloud-credentials' own RamRoleArn provider asks the
emulator's STS (signed with the operator's keys), and PAI calls signed with the temporary keys it gets are
counted under that role; a second role gives other keys; the answer is cached, and refused roles say why
without quoting a secret."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.conftest import ACCESS_KEY, STS_KEY, STS_TOKEN

from paiflow_emulator import Emulator
from paiflow_operator.pai.client import PaiClient
from paiflow_operator.pai.credentials import AssumeRoleSource, DefaultChainSource, check_sts_endpoint
from paiflow_operator.pai.errors import CredentialsError

ROLE_A = "acs:ram::1234567890123456:role/team-a-pai"
ROLE_B = "acs:ram::1234567890123456:role/team-b-pai"


def operator_source(key: tuple[str, str] = ACCESS_KEY, token: str | None = None) -> DefaultChainSource:
    """The operator's own credentials as the vendor's provider gives them (static keys standing in for RRSA)."""

    def factory() -> Any:
        from alibabacloud_credentials.provider import StaticAKCredentialsProvider, StaticSTSCredentialsProvider

        if token:
            return StaticSTSCredentialsProvider(access_key_id=key[0], access_key_secret=key[1], security_token=token)
        return StaticAKCredentialsProvider(access_key_id=key[0], access_key_secret=key[1])

    return DefaultChainSource(provider_factory=factory)


async def test_two_roles_sign_pai_calls_as_two_roles(emulator: Emulator) -> None:
    run = emulator.add_run(workspace_id="1")
    source = operator_source()
    team_a = AssumeRoleSource(ROLE_A, source, sts_endpoint=emulator.url)
    team_b = AssumeRoleSource(ROLE_B, source, sts_endpoint=emulator.url)
    async with PaiClient(endpoint_override=emulator.url) as pai:
        for creds in (team_a, team_b, team_a, source):
            await pai.get_pipeline_run(run.run_id, region="cn-hangzhou", credentials=creds)
    a, b = await team_a.get(), await team_b.get()
    assert a.is_sts and b.is_sts and a.access_key_id != b.access_key_id != ACCESS_KEY[0]
    assert a.access_key_id.startswith("STS.")
    by_role = emulator.counters.snapshot().by_role
    assert by_role == {ROLE_A: {"GetPipelineRun": 2}, ROLE_B: {"GetPipelineRun": 1}, "": {"GetPipelineRun": 1}}
    # Cached: one AssumeRole per role, however many calls.
    assert emulator.sts.calls == 2
    assumed = emulator.sts.assumed()
    assert {x.role_arn for x in assumed.values()} == {ROLE_A, ROLE_B}
    assert {x.source_key_id for x in assumed.values()} == {ACCESS_KEY[0]}
    assert {x.session_name for x in assumed.values()} == {"paiflow-operator"}


async def test_a_source_with_an_sts_token_signs_the_assume_role_with_it(emulator: Emulator) -> None:
    team_a = AssumeRoleSource(ROLE_A, operator_source(STS_KEY, STS_TOKEN), sts_endpoint=emulator.url)
    assert (await team_a.get()).is_sts
    assert {x.source_key_id for x in emulator.sts.assumed().values()} == {STS_KEY[0]}


async def test_a_role_the_operator_may_not_assume_is_a_credentials_error_without_secrets(emulator: Emulator) -> None:
    emulator.sts.trust[ROLE_A] = frozenset({"LTAIsomeoneElse"})
    with pytest.raises(CredentialsError) as caught:
        await AssumeRoleSource(ROLE_A, operator_source(), sts_endpoint=emulator.url).get()
    text = str(caught.value)
    assert "AssumeRole into " + ROLE_A in text and "NoPermission" in text
    assert ACCESS_KEY[1] not in text
    with pytest.raises(CredentialsError, match=r"EntityNotExist\.Role"):
        await AssumeRoleSource(ROLE_B, operator_source(), sts_endpoint=emulator.url).get()


async def test_a_wrong_source_secret_is_refused_by_the_emulator_sts(emulator: Emulator) -> None:
    with pytest.raises(CredentialsError, match="SignatureDoesNotMatch"):
        await AssumeRoleSource(ROLE_A, operator_source((ACCESS_KEY[0], "wrong")), sts_endpoint=emulator.url).get()


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [
        ("sts.aliyuncs.com", True),
        ("sts.cn-hangzhou.aliyuncs.com", True),
        ("sts-vpc.cn-shanghai.aliyuncs.com", True),
        ("http://127.0.0.1:8099", True),
        ("http://localhost:1", True),
        ("sts.aliyuncs.com.evil.example", False),
        ("https://sts.aliyuncs.com", False),
        ("http://10.0.0.1:80", False),
        ("evil.example", False),
        ("http://127.0.0.1:80/path", False),
    ],
)
def test_the_sts_endpoint_is_alibaba_clouds_or_loopback(endpoint: str, ok: bool) -> None:
    if ok:
        assert check_sts_endpoint(endpoint) == endpoint
    else:
        with pytest.raises(ValueError, match="sts_endpoint"):
            check_sts_endpoint(endpoint)

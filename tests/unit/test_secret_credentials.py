"""Credentials from a resource's Secret: every value is checked, none is ever quoted back."""

from __future__ import annotations

import pytest

from paiflow_operator.api.runs import CredentialsSecretRef, SecretKeySelector
from paiflow_operator.kube import KubeError
from paiflow_operator.pai.errors import CredentialsError
from paiflow_operator.secret_credentials import SecretCredentials

MARK = b"SEKRIT"
PEM = b"-----BEGIN PRIVATE KEY-----\nMIIEvSEKRITQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"


class Secrets:
    def __init__(self, data: dict[tuple[str, str], dict[str, bytes]]) -> None:
        self.data = data
        self.reads: list[tuple[str, str]] = []

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes]:
        self.reads.append((namespace, name))
        if (namespace, name) not in self.data:
            raise KubeError(404, "NotFound", "not found")
        return self.data[(namespace, name)]


def _source(values: dict[str, bytes]) -> SecretCredentials:
    return SecretCredentials(Secrets({("team-a", "c"): values}), ttl_seconds=60)


GOOD = {"accessKeyId": b"LTAI5tGood", "accessKeySecret": b"good-secret", "securityToken": b"CAIS+good/token=="}


async def test_good_values_with_a_trailing_newline_are_used() -> None:
    values = {k: v + b"\n" for k, v in GOOD.items()}
    creds = await (await _source(values).credentials("team-a", CredentialsSecretRef(name="c"))).get()
    assert (creds.access_key_id, creds.access_key_secret, creds.security_token) == (
        "LTAI5tGood",
        "good-secret",
        "CAIS+good/token==",
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("securityToken", b"CAIS-p1\n" + MARK + b"-p2"),  # a line-wrapped STS token
        ("accessKeyId", PEM),  # accessKeyIdKey pointed at a private key
        ("accessKeySecret", PEM),
        ("accessKeySecret", b"\xff\xfe" + MARK),  # not UTF-8
        ("accessKeyId", "LTAI-ü".encode() + MARK),  # UTF-8 but not ASCII
        ("accessKeySecret", MARK + b"\x00x"),
        ("accessKeySecret", MARK + b" two words"),
        ("accessKeyId", b"LTAI:" + MARK),  # not a key id's alphabet
    ],
)
async def test_unusable_values_are_refused_naming_secret_and_key_but_never_the_value(key: str, value: bytes) -> None:
    source = _source({**GOOD, key: value})
    with pytest.raises(CredentialsError) as info:
        await source.credentials("team-a", CredentialsSecretRef(name="c"))
    text = f"{info.value} {info.value!r}"
    assert info.value.code == "SecretValueInvalid"
    assert "team-a/c" in text and key in text
    assert "SEKRIT" not in text and "PRIVATE" not in text and "CAIS" not in text and "LTAI" not in text


async def test_a_key_picked_by_name_is_checked_too() -> None:
    source = _source({**GOOD, "tls.key": PEM})
    ref = CredentialsSecretRef(name="c", accessKeyIdKey="tls.key")
    with pytest.raises(CredentialsError, match=r"tls\.key") as info:
        await source.credentials("team-a", ref)
    assert "PRIVATE" not in str(info.value)


async def test_share_token_is_checked_and_missing_keys_are_named() -> None:
    source = _source({"token": b"tok\n" + MARK, "empty": b"  \n"})
    with pytest.raises(CredentialsError) as info:
        await source.share_token("team-a", SecretKeySelector(name="c", key="token"))
    assert "SEKRIT" not in str(info.value)
    with pytest.raises(CredentialsError, match="has no key empty"):
        await source.share_token("team-a", SecretKeySelector(name="c", key="empty"))


async def test_only_the_resource_namespace_is_read() -> None:
    secrets = Secrets({("team-b", "c"): GOOD})
    source = SecretCredentials(secrets, ttl_seconds=60)
    with pytest.raises(CredentialsError, match="team-a/c not found"):
        await source.credentials("team-a", CredentialsSecretRef(name="c"))
    assert secrets.reads == [("team-a", "c")]

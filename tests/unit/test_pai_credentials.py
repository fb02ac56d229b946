"""Credential sources: static keys, the vendor default chain, memoisation and concurrency, no leaks."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from paiflow_operator.pai import (
    Credentials,
    CredentialsError,
    CredentialSource,
    DefaultChainSource,
    PaiClient,
    StaticCredentialSource,
)

AK_ID = "LTAI5tAbCdEfGhIjKlMn"
AK_SECRET = "s3cr3t-AK-Secret-Value-0123456789"
STS_TOKEN = "CAIS-sts-token-value-ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def test_credentials_repr_and_str_hide_secrets() -> None:
    creds = Credentials(AK_ID, AK_SECRET, STS_TOKEN)
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}", repr([creds]), repr({"c": creds})):
        assert AK_SECRET not in text
        assert STS_TOKEN not in text
        assert AK_ID not in text
        assert AK_ID[5:] not in text  # nothing of the key id beyond its first 4 characters
        assert "LTAI" in text


def test_static_source_repr_hides_secrets() -> None:
    text = repr(StaticCredentialSource(AK_ID, AK_SECRET, STS_TOKEN))
    assert AK_SECRET not in text and STS_TOKEN not in text and AK_ID not in text


def test_credentials_are_frozen() -> None:
    creds = Credentials(AK_ID, AK_SECRET)
    with pytest.raises(AttributeError):
        creds.access_key_secret = "other"  # type: ignore[misc]


async def test_static_source_returns_its_keys() -> None:
    source = StaticCredentialSource(AK_ID, AK_SECRET)
    creds = await source.get()
    assert (creds.access_key_id, creds.access_key_secret, creds.security_token) == (AK_ID, AK_SECRET, None)
    assert not creds.is_sts
    assert isinstance(source, CredentialSource)


async def test_static_source_blank_token_is_no_token() -> None:
    creds = await StaticCredentialSource(AK_ID, AK_SECRET, "  ").get()
    assert creds.security_token is None


@pytest.mark.parametrize(("key_id", "secret"), [("", AK_SECRET), (AK_ID, ""), ("  ", AK_SECRET)])
def test_static_source_rejects_empty_parts(key_id: str, secret: str) -> None:
    with pytest.raises(CredentialsError) as info:
        StaticCredentialSource(key_id, secret)
    assert AK_SECRET not in str(info.value) and AK_ID not in str(info.value)


def _set_env_keys(monkeypatch: pytest.MonkeyPatch, key_id: str | None, secret: str | None, token: str | None) -> None:
    # alibabacloud_credentials snapshots the environment when auth_util is imported, so patch both the
    # process environment and that snapshot.
    from alibabacloud_credentials.utils import auth_util

    for env, attr, value in (
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "environment_access_key_id", key_id),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "environment_access_key_secret", secret),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "environment_security_token", token),
    ):
        if value is None:
            monkeypatch.delenv(env, raising=False)
        else:
            monkeypatch.setenv(env, value)
        monkeypatch.setattr(auth_util, attr, value)


async def test_default_chain_reads_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_env_keys(monkeypatch, AK_ID, AK_SECRET, None)
    creds = await DefaultChainSource().get()
    assert creds == Credentials(AK_ID, AK_SECRET, None)


async def test_default_chain_reads_env_sts_token(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_env_keys(monkeypatch, AK_ID, AK_SECRET, STS_TOKEN)
    creds = await DefaultChainSource().get()
    assert creds.security_token == STS_TOKEN and creds.is_sts


async def test_default_chain_failure_is_credentials_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Failing:
        def get_credentials(self) -> Any:
            raise RuntimeError("unable to load credentials from any of the providers in the chain")

    with pytest.raises(CredentialsError) as info:
        await DefaultChainSource(provider_factory=Failing).get()
    assert "unable to load credentials" in str(info.value)
    assert not info.value.retryable


class _CountingProvider:
    """Stands in for the library's provider: slow, blocking and counting its calls."""

    def __init__(self, delay: float = 0.05) -> None:
        self.calls = 0
        self.delay = delay
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def get_credentials(self) -> Any:
        import time

        with self._lock:
            self.calls += 1
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)  # a blocking metadata-server / STS round trip
        return _RawCreds(AK_ID, AK_SECRET, f"{STS_TOKEN}-{self.calls}")


class _RawCreds:
    def __init__(self, key_id: str, secret: str, token: str | None) -> None:
        self._values = (key_id, secret, token)

    def get_access_key_id(self) -> str:
        return self._values[0]

    def get_access_key_secret(self) -> str:
        return self._values[1]

    def get_security_token(self) -> str | None:
        return self._values[2]


async def test_concurrent_get_calls_do_one_lookup_off_the_event_loop() -> None:
    provider = _CountingProvider(delay=0.1)
    source = DefaultChainSource(provider_factory=lambda: provider)
    ticks = 0
    ticks_when_lookup_done: list[int] = []
    original = provider.get_credentials

    def observed_lookup() -> Any:
        result = original()
        ticks_when_lookup_done.append(ticks)
        return result

    provider.get_credentials = observed_lookup  # type: ignore[method-assign]

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(10):
            await asyncio.sleep(0.005)
            ticks += 1

    results = await asyncio.gather(ticker(), *(source.get() for _ in range(50)))
    creds = [c for c in results[1:] if isinstance(c, Credentials)]
    assert len(creds) == 50
    assert provider.calls == 1
    assert len({c.security_token for c in creds}) == 1
    assert threading.get_ident() not in provider.threads  # the blocking call ran in a worker thread
    # The loop kept ticking while the blocking lookup slept (a blocked loop would show 0 here).
    assert ticks_when_lookup_done and ticks_when_lookup_done[0] >= 3


async def test_repeated_get_is_memoised_until_cache_expires() -> None:
    provider = _CountingProvider(delay=0)
    now = [1000.0]
    source = DefaultChainSource(provider_factory=lambda: provider, cache_seconds=60, clock=lambda: now[0])
    first = await source.get()
    now[0] += 59
    assert await source.get() is first
    assert provider.calls == 1
    now[0] += 2
    second = await source.get()
    assert provider.calls == 2
    assert second.security_token != first.security_token  # picks up the library's refreshed token
    source.invalidate()
    await source.get()
    assert provider.calls == 3


async def test_failure_is_not_cached() -> None:
    attempts = 0

    class Flaky:
        def get_credentials(self) -> Any:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise RuntimeError("metadata server timeout")
            return _RawCreds(AK_ID, AK_SECRET, None)

    source = DefaultChainSource(provider_factory=Flaky)
    with pytest.raises(CredentialsError):
        await source.get()
    assert (await source.get()).access_key_id == AK_ID


async def test_empty_keys_from_chain_are_an_error() -> None:
    class Empty:
        def get_credentials(self) -> Any:
            return _RawCreds("", "", None)

    with pytest.raises(CredentialsError):
        await DefaultChainSource(provider_factory=Empty).get()


@pytest.mark.parametrize(
    ("source_factory", "expect_token"),
    [
        (lambda: StaticCredentialSource(AK_ID, AK_SECRET, STS_TOKEN), True),
        (lambda: StaticCredentialSource(AK_ID, AK_SECRET), False),
    ],
)
async def test_sts_token_sent_as_security_token_header(source_factory: Any, expect_token: bool) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"PipelineRunId": "flow-1", "Status": "Running"})

    async with PaiClient(transport=httpx.MockTransport(handler)) as client:
        await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=source_factory())
    (request,) = seen
    assert request.headers["authorization"].startswith(f"ACS3-HMAC-SHA256 Credential={AK_ID},")
    if expect_token:
        assert request.headers["x-acs-security-token"] == STS_TOKEN
        assert request.headers["x-acs-accesskey-id"] == AK_ID
        assert "x-acs-security-token" in request.headers["authorization"]
    else:
        assert "x-acs-security-token" not in request.headers
        assert "x-acs-accesskey-id" not in request.headers
    assert AK_SECRET not in str(request.headers) and AK_SECRET not in str(request.url)


async def test_default_chain_sts_env_token_reaches_the_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_env_keys(monkeypatch, AK_ID, AK_SECRET, STS_TOKEN)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"PipelineRunId": "flow-1", "Status": "Running"})

    async with PaiClient(transport=httpx.MockTransport(handler)) as client:
        await client.get_pipeline_run("flow-1", region="cn-hangzhou", credentials=DefaultChainSource())
    assert seen[0].headers["x-acs-security-token"] == STS_TOKEN

"""Where the access keys used to sign PAI calls come from.

Two sources: keys copied from a per-resource Kubernetes Secret (:class:`StaticCredentialSource`) and the
Alibaba Cloud default chain (:class:`DefaultChainSource`: env keys, RRSA/OIDC role on ACK, ECS RAM role,
profile files, credentials URI) resolved by the vendor's ``alibabacloud_credentials`` library.

No secret ever reaches a repr, a str, an exception message or a log line from this module.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import CredentialsError

__all__ = [
    "AssumeRoleSource",
    "CredentialSource",
    "Credentials",
    "DefaultChainSource",
    "StaticCredentialSource",
    "check_sts_endpoint",
    "mask_key_id",
]

# STS hosts of Alibaba Cloud: sts.aliyuncs.com, sts.<region>.aliyuncs.com, sts-vpc.<region>.aliyuncs.com.
_STS_HOST = re.compile(r"^sts(-vpc)?(\.[a-z0-9-]+)?\.aliyuncs\.com$")
_LOOPBACK_URL = re.compile(r"^http://(127\.[0-9]+\.[0-9]+\.[0-9]+|localhost|\[::1\])(:[0-9]{1,5})?$")


def check_sts_endpoint(value: str) -> str:
    """The STS endpoint AssumeRole is sent to: Alibaba Cloud's own STS hosts (https, as the vendor library
    always uses for a bare host), or http on a loopback address for the emulator. The request carries the
    operator's key id and, with RRSA, its STS token: it must never go anywhere else."""
    value = value.strip()
    if _STS_HOST.fullmatch(value) or _LOOPBACK_URL.fullmatch(value):
        return value
    raise ValueError(
        "sts_endpoint must be an Alibaba Cloud STS host (sts.aliyuncs.com, sts[-vpc].<region>.aliyuncs.com) "
        "or http://127.0.0.1:<port> for an emulator"
    )


def mask_key_id(access_key_id: str) -> str:
    """At most the first 4 characters of a key id: enough to tell keys apart in logs, not to use one."""
    return f"{access_key_id[:4]}****" if access_key_id else "<empty>"


@dataclass(frozen=True, repr=False)
class Credentials:
    access_key_id: str
    access_key_secret: str
    security_token: str | None = None

    @property
    def is_sts(self) -> bool:
        return bool(self.security_token)

    def __repr__(self) -> str:
        sts = ", sts=True" if self.is_sts else ""
        return f"Credentials(access_key_id={mask_key_id(self.access_key_id)!r}{sts})"

    __str__ = __repr__


@runtime_checkable
class CredentialSource(Protocol):
    async def get(self) -> Credentials: ...


class StaticCredentialSource:
    """Fixed keys, e.g. read from the Secret a PaiPipelineRun names. An STS token is optional."""

    def __init__(self, access_key_id: str, secret: str, security_token: str | None = None) -> None:
        access_key_id = (access_key_id or "").strip()
        secret = (secret or "").strip()
        if not access_key_id or not secret:
            # Say which part is missing, never what the other part is.
            missing = "access key id" if not access_key_id else "access key secret"
            raise CredentialsError(f"static credentials: {missing} is empty")
        token = (security_token or "").strip() or None
        self._credentials = Credentials(access_key_id, secret, token)

    async def get(self) -> Credentials:
        return self._credentials

    def __repr__(self) -> str:
        return f"StaticCredentialSource({self._credentials!r})"


# Long opaque runs of token-ish characters (JWTs, STS tokens, base64 secrets) that a library message
# might quote; ARNs, provider names and HTTP codes are short or contain ':' so they survive.
_TOKENISH = re.compile(r"[A-Za-z0-9+/=_\-.]{32,}")
_MAX_MESSAGE = 500


def _scrub(text: str) -> str:
    text = _TOKENISH.sub("<redacted>", text)
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def _default_provider_factory() -> Any:
    from alibabacloud_credentials.provider import DefaultCredentialsProvider

    return DefaultCredentialsProvider()


class DefaultChainSource:
    """The vendor library's default credential chain, made safe for an asyncio event loop.

    The library already caches STS credentials and refreshes them 15 minutes before they expire, so a
    call is normally free of network I/O. We still call its *synchronous* API in a worker thread: its async
    path takes a ``threading.Lock`` inside a coroutine (blocking the loop for up to 5 s when two refreshes
    race) and reads profile files synchronously. On top we keep the last answer for ``cache_seconds``
    (far below the 15-minute refresh margin, so a memoised STS token is never expired) and an
    ``asyncio.Lock`` so that many concurrent reconciles trigger at most one lookup.
    """

    def __init__(
        self,
        *,
        cache_seconds: float = 60.0,
        provider_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        what: str = "default credential chain",
    ) -> None:
        self._cache_seconds = cache_seconds
        self._provider_factory = provider_factory or _default_provider_factory
        self._clock = clock
        self._what = what
        self._provider: Any = None
        self._provider_lock = threading.Lock()
        self._cached: Credentials | None = None
        self._cached_at = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> Credentials | None:
        if self._cached is not None and self._clock() - self._cached_at < self._cache_seconds:
            return self._cached
        return None

    async def get(self) -> Credentials:
        hit = self._fresh()
        if hit is not None:
            return hit
        async with self._lock:
            # Another caller may have refreshed while we waited for the lock.
            hit = self._fresh()
            if hit is not None:
                return hit
            creds = await asyncio.to_thread(self._resolve)
            self._cached, self._cached_at = creds, self._clock()
            return creds

    def _resolve(self) -> Credentials:
        """Runs in a worker thread. Blocking I/O (metadata server, STS, files) is fine here."""
        try:
            raw = self.vendor_provider().get_credentials()
            key_id = raw.get_access_key_id() or ""
            secret = raw.get_access_key_secret() or ""
            token = raw.get_security_token() or None
        except Exception as exc:
            # The library's message lists which providers failed and why; scrub it in case one quotes
            # a token, and drop the chained exception so tracebacks cannot show more.
            raise CredentialsError(
                f"{self._what} found no usable credentials: {type(exc).__name__}: {_scrub(str(exc))}"
            ) from None
        if not key_id or not secret:
            raise CredentialsError(f"{self._what} returned an empty access key")
        return Credentials(key_id, secret, token)

    def vendor_provider(self) -> Any:
        """The vendor library's provider behind this source (made once): the source of an AssumeRole."""
        with self._provider_lock:
            if self._provider is None:
                self._provider = self._provider_factory()
            return self._provider

    def invalidate(self) -> None:
        """Forget the memoised answer, e.g. after PAI rejected the token as expired."""
        self._cached = None

    def __repr__(self) -> str:
        return "DefaultChainSource()"


class AssumeRoleSource(DefaultChainSource):
    """STS AssumeRole into a RAM role from another source's credentials (alibabacloud-credentials'
    RamRoleArn provider, with the operator's own provider as its source).

    The vendor provider caches the temporary keys and refreshes them 15 minutes before they expire (as it does
    for RRSA's); on top, this class memoises for ``cache_seconds`` and serialises lookups like any
    DefaultChainSource. PAI and ActionTrail then see the role, so the role's own RAM policy bounds what the
    calls can do.
    """

    DURATION_SECONDS = 3600

    def __init__(
        self,
        role_arn: str,
        source: DefaultChainSource,
        *,
        sts_endpoint: str = "sts.aliyuncs.com",
        session_name: str = "paiflow-operator",
        cache_seconds: float = 60.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        endpoint = check_sts_endpoint(sts_endpoint)
        self.role_arn = role_arn

        def factory() -> Any:
            from alibabacloud_credentials.http import HttpOptions
            from alibabacloud_credentials.provider import RamRoleArnCredentialsProvider

            return RamRoleArnCredentialsProvider(
                credentials_provider=source.vendor_provider(),
                role_arn=role_arn,
                role_session_name=session_name,
                duration_seconds=self.DURATION_SECONDS,
                sts_endpoint=endpoint,
                http_options=HttpOptions(
                    connect_timeout=int(connect_timeout * 1000), read_timeout=int(read_timeout * 1000)
                ),
            )

        super().__init__(
            cache_seconds=cache_seconds, provider_factory=factory, clock=clock, what=f"AssumeRole into {role_arn}"
        )

    def __repr__(self) -> str:
        return f"AssumeRoleSource({self.role_arn!r})"

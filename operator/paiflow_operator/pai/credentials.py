"""Where the access keys used to sign PAI calls come from.

Two sources: keys copied from a per-resource Kubernetes Secret (:class:`StaticCredentialSource`) and the
Alibaba Cloud default chain (:class:`DefaultChainSource`: env keys, RRSA/OIDC role on ACK, ECS RAM role,
profile files, credentials URI) resolved by the vendor's ``alibabacloud_credentials`` library.

No secret ever reaches a repr, a str, an exception message or a log line from this module.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import CredentialsError

__all__ = [
    "CredentialSource",
    "Credentials",
    "DefaultChainSource",
    "StaticCredentialSource",
    "mask_key_id",
]


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
    ) -> None:
        self._cache_seconds = cache_seconds
        self._provider_factory = provider_factory or _default_provider_factory
        self._clock = clock
        self._provider: Any = None
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
            if self._provider is None:
                self._provider = self._provider_factory()
            raw = self._provider.get_credentials()
            key_id = raw.get_access_key_id() or ""
            secret = raw.get_access_key_secret() or ""
            token = raw.get_security_token() or None
        except Exception as exc:
            # The library's message lists which providers failed and why; scrub it in case one quotes
            # a token, and drop the chained exception so tracebacks cannot show more.
            raise CredentialsError(
                f"default credential chain found no usable credentials: {type(exc).__name__}: {_scrub(str(exc))}"
            ) from None
        if not key_id or not secret:
            raise CredentialsError("default credential chain returned an empty access key")
        return Credentials(key_id, secret, token)

    def invalidate(self) -> None:
        """Forget the memoised answer, e.g. after PAI rejected the token as expired."""
        self._cached = None

    def __repr__(self) -> str:
        return "DefaultChainSource()"

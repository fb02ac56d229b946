"""Credentials and share tokens read from Secrets in a resource's own namespace.

Every value is checked before it is used: only printable ASCII without inner whitespace can go into an HTTP
header or a signed query. Anything else (a multi-line key, a PEM file picked with ``accessKeyIdKey: tls.key``,
non-UTF-8 bytes) is refused with a message that names the Secret and the key but never quotes the value:
otherwise a library's error text would echo it into a condition, where anyone who may read the resource (but
not the Secret) could read it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from paiflow_operator.api.runs import CredentialsSecretRef, SecretKeySelector
from paiflow_operator.kube import KubeError
from paiflow_operator.pai.credentials import CredentialSource, StaticCredentialSource
from paiflow_operator.pai.errors import CredentialsError

# AccessKey ids are short alphanumerics ("LTAI...", "STS.NT..."); secrets and tokens are opaque printable
# ASCII (STS tokens run to a few KiB of base64).
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_OPAQUE = re.compile(r"[\x21-\x7e]+")
_MAX_OPAQUE = 16 * 1024


class SecretReader(Protocol):
    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes]: ...


@dataclass(frozen=True)
class SecretProblem:
    code: str
    message: str


def _value(data: dict[str, bytes], namespace: str, secret: str, key: str, what: str, *, key_id: bool = False) -> str:
    raw = data.get(key)
    if not raw or not raw.strip():
        raise CredentialsError(f"Secret {namespace}/{secret} has no key {key}", code="SecretKeyMissing")
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        text = None
    valid = text is not None and (
        _KEY_ID.fullmatch(text) if key_id else (len(text) <= _MAX_OPAQUE and _OPAQUE.fullmatch(text))
    )
    if text is None or not valid:
        # The value itself is never quoted, nor anything derived from it.
        raise CredentialsError(
            f"Secret {namespace}/{secret} key {key} is not a valid {what}: it must be printable ASCII with no "
            "spaces, line breaks or control characters",
            code="SecretValueInvalid",
        )
    return text


class SecretCredentials:
    """Reads Secrets through the operator's ServiceAccount, cached for a short TTL, answers in the
    resource's own namespace only (the references have no namespace field)."""

    def __init__(self, kube: SecretReader, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._kube = kube
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, dict[str, bytes] | SecretProblem]] = {}

    async def _secret(self, namespace: str, name: str) -> dict[str, bytes]:
        cached = self._cache.get((namespace, name))
        now = self._clock()
        if cached is None or now - cached[0] >= self._ttl:
            try:
                value: dict[str, bytes] | SecretProblem = await self._kube.read_secret(namespace, name)
            except KubeError as exc:
                if exc.status == 404:
                    value = SecretProblem("SecretNotFound", f"Secret {namespace}/{name} not found")
                elif exc.status == 403:
                    value = SecretProblem(
                        "SecretForbidden",
                        f"the operator may not read Secret {namespace}/{name}: bind the ClusterRole "
                        f"paiflow-operator-secret-reader in namespace {namespace}",
                    )
                else:
                    raise CredentialsError(f"reading Secret {namespace}/{name} failed: {exc.status}") from None
            cached = (now, value)
            self._cache[(namespace, name)] = cached
        if isinstance(cached[1], SecretProblem):
            raise CredentialsError(cached[1].message, code=cached[1].code)
        return cached[1]

    async def credentials(self, namespace: str, ref: CredentialsSecretRef) -> CredentialSource:
        data = await self._secret(namespace, ref.name)
        missing = [k for k in (ref.accessKeyIdKey, ref.accessKeySecretKey) if not (data.get(k) or b"").strip()]
        if missing:
            raise CredentialsError(
                f"Secret {namespace}/{ref.name} has no key {', '.join(missing)}", code="SecretKeyMissing"
            )
        key_id = _value(data, namespace, ref.name, ref.accessKeyIdKey, "AccessKey id", key_id=True)
        secret = _value(data, namespace, ref.name, ref.accessKeySecretKey, "AccessKey secret")
        token = None
        if (data.get(ref.securityTokenKey) or b"").strip():
            token = _value(data, namespace, ref.name, ref.securityTokenKey, "STS security token")
        return StaticCredentialSource(key_id, secret, token)

    async def share_token(self, namespace: str, ref: SecretKeySelector) -> str:
        data = await self._secret(namespace, ref.name)
        return _value(data, namespace, ref.name, ref.key, "share token")

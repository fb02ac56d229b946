"""Verifies ACS3-HMAC-SHA256 signatures the way the gateway would, from what actually came over the wire.

The canonical request is rebuilt from the received method, the raw (still percent-encoded) path, the
decoded query, exactly the headers named in SignedHeaders, and x-acs-content-sha256, which must equal the
SHA-256 of the body received. The arithmetic is ``paiflow_operator.pai.signing``'s, shared with the client.
"""

from __future__ import annotations

import hmac
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from paiflow_operator.pai import signing

from . import vendor

# Headers the gateway insists are signed, on top of every x-acs-* header that is present.
REQUIRED_SIGNED = ("host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce")
_AUTH_RE = re.compile(r"^(?P<alg>\S+)\s+Credential=(?P<ak>[^,]+),SignedHeaders=(?P<sh>[^,]*),Signature=(?P<sig>\S+)$")


class AuthFailure(Exception):
    def __init__(self, error: vendor.VendorError, detail: str = "") -> None:
        super().__init__(error.code)
        self.error = error
        self.detail = detail

    @property
    def message(self) -> str:
        return f"{self.error.message} {self.detail}".strip()


@dataclass(frozen=True, slots=True)
class Caller:
    access_key_id: str
    security_token: str | None


Headers = Mapping[str, Sequence[str]]


def collect_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Lower-cased header name -> every value received under it."""
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name.lower(), []).append(value)
    return out


def parse_acs_date(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class Verifier:
    def __init__(
        self,
        keys: Mapping[str, str],
        sts_tokens: Mapping[str, str] | None = None,
        *,
        max_skew: float = 900.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self.keys: dict[str, str] = dict(keys)
        self.sts_tokens: dict[str, str] = dict(sts_tokens or {})
        self.expired_tokens: set[str] = set()
        self.max_skew = max_skew
        # Signature time is checked against real time, not the run clock: tests move the run clock by
        # hours, and the clients they drive still sign with the wall clock.
        self.wall = wall
        self._nonces: dict[str, float] = {}
        self._nonce_order: deque[tuple[float, str]] = deque()

    def add_key(self, access_key_id: str, secret: str) -> None:
        with self._lock:
            self.keys[access_key_id] = secret

    def remove_key(self, access_key_id: str) -> None:
        with self._lock:
            self.keys.pop(access_key_id, None)

    def add_sts_token(self, token: str, access_key_id: str) -> None:
        with self._lock:
            self.sts_tokens[token] = access_key_id
            self.expired_tokens.discard(token)

    def expire_sts_token(self, token: str) -> None:
        with self._lock:
            self.expired_tokens.add(token)

    def verify(self, method: str, raw_path: str, query: Mapping[str, str], headers: Headers, body: bytes) -> Caller:
        """Returns who signed the request, or raises AuthFailure with the vendor's error."""
        auth = _single(headers, "authorization")
        if not auth:
            raise AuthFailure(vendor.INCOMPLETE_SIGNATURE, "Authorization header is missing.")
        match = _AUTH_RE.match(auth.strip())
        if match is None:
            raise AuthFailure(vendor.INCOMPLETE_SIGNATURE, "Authorization header is not well formed.")
        if match["alg"] != signing.SIGNATURE_ALGORITHM:
            raise AuthFailure(vendor.INVALID_SIGNATURE_METHOD)
        access_key_id = match["ak"]
        token = _single(headers, "x-acs-security-token")
        with self._lock:
            secret = self.keys.get(access_key_id)
            token_owner = self.sts_tokens.get(token) if token else None
            token_expired = bool(token) and token in self.expired_tokens
        if secret is None:
            raise AuthFailure(vendor.INVALID_ACCESS_KEY)
        if token:
            if token_owner is None:
                raise AuthFailure(vendor.TOKEN_MALFORMED)
            if token_owner != access_key_id:
                raise AuthFailure(vendor.TOKEN_MISMATCH)
            if token_expired:
                raise AuthFailure(vendor.TOKEN_EXPIRED)
        elif access_key_id.startswith("STS."):
            # Temporary keys (always "STS."-prefixed at Alibaba) are useless without their token.
            raise AuthFailure(vendor.MISSING_TOKEN)

        signed = [name for name in match["sh"].split(";") if name]
        signed_set = set(signed)
        required = set(REQUIRED_SIGNED) | {name for name in headers if name.startswith("x-acs-")}
        missing = sorted(required - signed_set)
        if missing:
            raise AuthFailure(vendor.INCOMPLETE_SIGNATURE, f"Headers not signed: {', '.join(missing)}.")
        if signed != sorted(signed_set) or any(name != name.lower() for name in signed):
            raise AuthFailure(vendor.INCOMPLETE_SIGNATURE, "SignedHeaders must be lower-case and sorted.")
        absent = [name for name in signed if name not in headers]
        if absent:
            raise AuthFailure(vendor.SIGNATURE_MISMATCH, f"Signed headers absent: {', '.join(absent)}.")

        date = _single(headers, "x-acs-date") or ""
        try:
            sent_at = parse_acs_date(date)
        except ValueError:
            raise AuthFailure(vendor.TIMESTAMP_FORMAT, f"x-acs-date: {date!r}.") from None
        if abs(self.wall() - sent_at) > self.max_skew:
            raise AuthFailure(vendor.TIMESTAMP_EXPIRED, f"x-acs-date: {date}.")

        claimed_hash = _single(headers, "x-acs-content-sha256") or ""
        if not hmac.compare_digest(claimed_hash.lower(), signing.sha256_hex(body)):
            raise AuthFailure(vendor.SIGNATURE_MISMATCH, "x-acs-content-sha256 does not match the body.")

        # Several values under one name are signed sorted and comma-joined; pre-joining keeps that
        # intact through signing.canonical_headers, which strips and sorts again.
        signed_headers = {name: ",".join(sorted(v.strip() for v in headers[name])) for name in signed}
        canonical, _ = signing.canonical_request(method, raw_path, query, signed_headers, claimed_hash)
        expected = signing.signature(secret, canonical)
        if not hmac.compare_digest(expected, match["sig"].lower()):
            to_sign = f"{signing.SIGNATURE_ALGORITHM}\n{signing.sha256_hex(canonical.encode('utf-8'))}"
            raise AuthFailure(vendor.SIGNATURE_MISMATCH, f"server string to sign is:{to_sign}")

        # Only a correctly signed request may use up a nonce, so forgeries cannot block real callers.
        nonce = _single(headers, "x-acs-signature-nonce") or ""
        if not self._remember_nonce(nonce, sent_at):
            raise AuthFailure(vendor.NONCE_USED)
        return Caller(access_key_id, token or None)

    def _remember_nonce(self, nonce: str, sent_at: float) -> bool:
        now = self.wall()
        with self._lock:
            # Once its x-acs-date is out of the skew window a replay fails the date check anyway, so the
            # nonce can be forgotten then: memory stays bounded by rate x max_skew.
            while self._nonce_order and self._nonce_order[0][0] < now:
                expiry, old = self._nonce_order.popleft()
                if self._nonces.get(old) == expiry:
                    del self._nonces[old]
            if nonce in self._nonces:
                return False
            expiry = sent_at + self.max_skew
            self._nonces[nonce] = expiry
            self._nonce_order.append((expiry, nonce))
            return True


def _single(headers: Headers, name: str) -> str | None:
    values = headers.get(name)
    return values[-1] if values else None

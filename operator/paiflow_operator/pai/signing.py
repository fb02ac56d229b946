"""ACS3-HMAC-SHA256 request signing ("V3" signature), byte for byte as the vendor's SDK computes it.

The reference is ``alibabacloud_tea_openapi.utils.Utils.get_authorization``; tests compare against it.
The emulator imports the same functions to verify what it receives, so both sides share one definition.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

SIGNATURE_ALGORITHM = "ACS3-HMAC-SHA256"
EMPTY_PAYLOAD_SHA256 = hashlib.sha256(b"").hexdigest()


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as the SDK does it: everything but unreserved characters, UTF-8."""
    return quote(value, safe="~", encoding="utf-8")


def sha256_hex(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def canonical_query(query: Mapping[str, str | None]) -> str:
    # The SDK sorts the raw keys and encodes only the values; None values are dropped.
    keys = sorted(k for k, v in query.items() if v is not None)
    return "&".join(f"{k}={percent_encode(str(query[k]))}" for k in keys)


def canonical_headers(headers: Mapping[str, str | None]) -> tuple[str, str]:
    """Returns (canonical header block, signed header list). Every header given is signed."""
    merged: dict[str, list[str]] = {}
    for name, value in headers.items():
        if value is None:
            continue
        merged.setdefault(name.lower(), []).append(str(value).strip())
    names = sorted(merged)
    block = "".join(f"{n}:{','.join(sorted(merged[n]))}\n" for n in names)
    return block, ";".join(names)


def canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str | None],
    headers: Mapping[str, str | None],
    payload_sha256: str,
) -> tuple[str, str]:
    """Returns (canonical request, signed header list)."""
    header_block, signed = canonical_headers(headers)
    text = f"{method}\n{path or '/'}\n{canonical_query(query)}\n{header_block}\n{signed}\n{payload_sha256}"
    return text, signed


def signature(secret: str, canonical: str) -> str:
    string_to_sign = f"{SIGNATURE_ALGORITHM}\n{sha256_hex(canonical.encode('utf-8'))}"
    return hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization(
    method: str,
    path: str,
    query: Mapping[str, str | None],
    headers: Mapping[str, str | None],
    payload_sha256: str,
    access_key_id: str,
    access_key_secret: str,
) -> str:
    """The Authorization header value. ``path`` is the already percent-encoded request path."""
    canonical, signed = canonical_request(method, path, query, headers, payload_sha256)
    sig = signature(access_key_secret, canonical)
    return f"{SIGNATURE_ALGORITHM} Credential={access_key_id},SignedHeaders={signed},Signature={sig}"

"""A minimal ACS3 request signer for tests that talk to the emulator without a full client.

It signs exactly like the vendor SDK (same header set, same canonical form), and lets a test pin the
date and nonce or tamper with the result afterwards.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from paiflow_operator.pai import signing

from .vendor import API_VERSION


@dataclass
class SignedRequest:
    method: str
    path: str  # percent-encoded, as signed
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """Path plus query string, ready to append to the base URL."""
        return f"{self.path}?{urlencode(self.query)}" if self.query else self.path


def sign(
    method: str,
    path: str,
    *,
    action: str,
    host: str,
    access_key_id: str,
    secret: str,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    security_token: str | None = None,
    date: float | None = None,
    nonce: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> SignedRequest:
    """Builds and signs a request. ``body`` may be bytes or anything JSON-serialisable."""
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    when = datetime.fromtimestamp(time.time() if date is None else date, tz=UTC)
    headers: dict[str, str] = {
        "host": host,
        "x-acs-action": action,
        "x-acs-version": API_VERSION,
        "x-acs-date": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "x-acs-content-sha256": signing.sha256_hex(raw),
        "accept": "application/json",
    }
    if raw:
        headers["content-type"] = "application/json; charset=utf-8"
    if security_token:
        headers["x-acs-accesskey-id"] = access_key_id
        headers["x-acs-security-token"] = security_token
    headers.update(extra_headers or {})
    q = dict(query or {})
    headers["Authorization"] = signing.authorization(
        method, path, dict(q), dict(headers), headers["x-acs-content-sha256"], access_key_id, secret
    )
    return SignedRequest(method, path, q, headers, raw)

"""STS AssumeRole as Alibaba Cloud serves it (RPC style, HMAC-SHA1 "signature version 1.0" in the query).

The caller signs with its own keys (and token, when those are temporary); the answer is a set of temporary
keys tied to the role: "STS."-prefixed key id, secret and security token, registered with the PAI verifier so
that PAI calls signed with them are accepted and known to come from that role.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote_plus

from .auth import Verifier

ACTION = "AssumeRole"
VERSION = "2015-04-01"
ROLE_ARN = re.compile(r"^acs:ram::(?P<account>[0-9]{16}):role/(?P<name>[A-Za-z0-9.-]{1,64})$")
MIN_DURATION, MAX_DURATION = 900, 43200


class StsError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True, slots=True)
class Assumed:
    role_arn: str
    session_name: str
    source_key_id: str


def string_to_sign(method: str, query: Mapping[str, str]) -> str:
    """As alibabacloud_credentials' parameter_helper.compose_string_to_sign (sorted, quote_plus-encoded)."""
    canonical = "&".join(f"{quote_plus(k)}={quote_plus(query[k])}" for k in sorted(query))
    return f"{method}&{quote_plus('/')}&{quote_plus(canonical)}"


def sign(text: str, secret: str) -> str:
    return base64.b64encode(hmac.new(f"{secret}&".encode(), text.encode(), hashlib.sha1).digest()).decode()


class Sts:
    """AssumeRole against the emulator's keys. Roles may be restricted (``trust``); by default any well-formed
    role ARN may be assumed by any known key, which is what the tests need."""

    def __init__(self, verifier: Verifier) -> None:
        self._verifier = verifier
        self._lock = threading.Lock()
        self._assumed: dict[str, Assumed] = {}  # temporary key id -> what it was minted for
        # role ARN -> key ids allowed to assume it (None: any); empty dict: every role exists
        self.trust: dict[str, frozenset[str] | None] = {}
        self.calls = 0

    def role_of(self, access_key_id: str) -> str | None:
        with self._lock:
            assumed = self._assumed.get(access_key_id)
        return None if assumed is None else assumed.role_arn

    def assumed(self) -> dict[str, Assumed]:
        with self._lock:
            return dict(self._assumed)

    def assume_role(self, method: str, query: Mapping[str, str], now: datetime | None = None) -> dict[str, object]:
        with self._lock:
            self.calls += 1
        given = dict(query)
        signature = given.pop("Signature", "")
        key_id = given.get("AccessKeyId", "")
        if given.get("Version") != VERSION or given.get("SignatureMethod") != "HMAC-SHA1":
            raise StsError(400, "InvalidParameter", "Version must be 2015-04-01 and SignatureMethod HMAC-SHA1.")
        secret = self._verifier.keys.get(key_id)
        if secret is None:
            raise StsError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        token = given.get("SecurityToken")
        if token:
            if self._verifier.sts_tokens.get(token) != key_id:
                raise StsError(400, "InvalidSecurityToken.Malformed", "Specified SecurityToken is malformed.")
            if token in self._verifier.expired_tokens:
                raise StsError(400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")
        elif key_id.startswith("STS."):
            raise StsError(400, "MissingSecurityToken", "SecurityToken is mandatory for this action.")
        expected = sign(string_to_sign(method, given), secret)
        if not hmac.compare_digest(expected, signature):
            raise StsError(400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation.")
        role_arn = given.get("RoleArn", "")
        match = ROLE_ARN.fullmatch(role_arn)
        if match is None:
            raise StsError(400, "InvalidParameter.RoleArn", "The parameter RoleArn is wrongly formed.")
        with self._lock:
            trust = dict(self.trust)
        if trust:
            if role_arn not in trust:
                raise StsError(404, "EntityNotExist.Role", "The role not exists.")
            allowed = trust[role_arn]
            if allowed is not None and key_id not in allowed:
                raise StsError(403, "NoPermission", "You are not authorized to do this action.")
        session = given.get("RoleSessionName", "")
        if not re.fullmatch(r"[\w.@-]{2,64}", session):
            raise StsError(400, "InvalidParameter.RoleSessionName", "The parameter RoleSessionName is wrongly formed.")
        try:
            duration = int(given.get("DurationSeconds", "3600"))
        except ValueError:
            duration = -1
        if not MIN_DURATION <= duration <= MAX_DURATION:
            raise StsError(400, "InvalidParameter.DurationSeconds", "The DurationSeconds is out of range.")
        temp_id = "STS.NT" + secrets.token_hex(12)
        temp_secret = secrets.token_urlsafe(30)
        temp_token = "CAIS" + secrets.token_urlsafe(96)
        self._verifier.add_key(temp_id, temp_secret)
        self._verifier.add_sts_token(temp_token, temp_id)
        with self._lock:
            self._assumed[temp_id] = Assumed(role_arn, session, key_id)
        expires = (now or datetime.now(UTC)) + timedelta(seconds=duration)
        role_name = match["name"]
        return {
            "AssumedRoleUser": {
                "Arn": f"acs:ram::{match['account']}:assumed-role/{role_name}/{session}",
                "AssumedRoleId": f"3{secrets.randbelow(10**17):017d}:{session}",
            },
            "Credentials": {
                "AccessKeyId": temp_id,
                "AccessKeySecret": temp_secret,
                "SecurityToken": temp_token,
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }

"""Typed PAI API errors. Each says whether retrying can help and carries PAI's RequestId.

Nothing here ever holds a credential: messages are built from PAI's Code/Message and the HTTP status only.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    THROTTLED = "Throttled"
    NOT_FOUND = "RunNotFound"
    AUTH = "AuthenticationFailed"
    BAD_REQUEST = "BadRequest"
    SERVER = "ServerError"
    TRANSPORT = "TransportError"
    MALFORMED = "MalformedResponse"
    CREDENTIALS = "CredentialsUnavailable"


RETRYABLE_KINDS = frozenset({ErrorKind.THROTTLED, ErrorKind.SERVER, ErrorKind.TRANSPORT, ErrorKind.MALFORMED})


class PaiError(Exception):
    kind: ErrorKind = ErrorKind.SERVER

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.request_id = request_id

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def describe(self, *, with_request_id: bool = True) -> str:
        parts = [self.message]
        if self.code:
            parts.append(f"code={self.code}")
        if self.http_status:
            parts.append(f"http={self.http_status}")
        if self.request_id and with_request_id:
            parts.append(f"requestId={self.request_id}")
        return " ".join(parts)

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ThrottledError(PaiError):
    kind = ErrorKind.THROTTLED


class NotFoundError(PaiError):
    kind = ErrorKind.NOT_FOUND


class AuthError(PaiError):
    kind = ErrorKind.AUTH


class BadRequestError(PaiError):
    kind = ErrorKind.BAD_REQUEST


class ServerError(PaiError):
    kind = ErrorKind.SERVER


class TransportError(PaiError):
    kind = ErrorKind.TRANSPORT


class MalformedResponseError(PaiError):
    kind = ErrorKind.MALFORMED


class CredentialsError(PaiError):
    """No usable credentials (missing Secret, empty key, default chain found nothing)."""

    kind = ErrorKind.CREDENTIALS

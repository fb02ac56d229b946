"""Conditions and Events as every kind writes them (pure): set and find a condition, timestamps, error -> reason.

One copy for PaiPipelineRuns and PaiWorkspaces alike, so that both read the same to kstatus, Argo CD and a
person: a condition's lastTransitionTime moves only when its status flips, messages are capped, and a PAI
error is named the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from paiflow_operator.pai.errors import ErrorKind, PaiError

READY = "Ready"
SUCCEEDED = "Succeeded"
RECONCILING = "Reconciling"
STALLED = "Stalled"

# Errors that need a human (fix the run id, the keys, the Secret): retried slowly, reported as Stalled.
NEEDS_HUMAN = frozenset({ErrorKind.NOT_FOUND, ErrorKind.AUTH, ErrorKind.CREDENTIALS, ErrorKind.BAD_REQUEST})
# PAI's message is copied into conditions; metav1.Condition allows 32 KiB, a reader wants far less.
MAX_CONDITION_MESSAGE = 4096


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def timestamp(value: datetime | None) -> str | None:
    """metav1.Time's wire format: RFC 3339 in UTC, whole seconds."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def find_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> None:
    """Upserts a condition; lastTransitionTime moves only when the status itself flips."""
    existing = find_condition(conditions, type_)
    if len(message) > MAX_CONDITION_MESSAGE:
        message = message[: MAX_CONDITION_MESSAGE - 3] + "..."
    transition = timestamp(now)
    if existing is not None and existing.get("status") == status:
        transition = existing.get("lastTransitionTime") or transition
    new = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }
    if existing is None:
        conditions.append(new)
    else:
        conditions[conditions.index(existing)] = new


def error_reason(error: PaiError) -> str:
    """A condition reason for a PAI error: a Secret problem is named by its code, anything else by its kind
    (made to fit metav1.Condition's reason syntax)."""
    reason = error.code if error.kind is ErrorKind.CREDENTIALS and error.code else error.kind.value
    return "".join(ch for ch in reason if ch.isascii() and (ch.isalnum() or ch == "_")) or "Error"

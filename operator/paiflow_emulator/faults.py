"""Fault injection: which scripted misbehaviour, if any, a request meets.

A fault matches a request by action and run id (either may be left open), while it has calls left
(``count``) and while the emulator clock is inside its window. Latency faults add up and let the request
proceed; of the others the first matching one (in insertion order) decides the answer.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import vendor


class FaultKind(StrEnum):
    LATENCY = "latency"  # delay, then answer normally
    UNAVAILABLE = "unavailable"  # 503 ServiceUnavailable
    INTERNAL = "internal"  # 500 InternalError
    THROTTLE = "throttle"  # 400 Throttling.User (status overridable)
    MALFORMED = "malformed"  # 200 with a truncated JSON body
    HANG = "hang"  # never answer (until the emulator stops)
    HOLD = "hold"  # do what was asked (e.g. create the run), then never answer: a lost response
    NOT_FOUND = "not_found"  # the run does not exist
    BAD_CREDENTIALS = "bad_credentials"  # answer as if the access key were unknown
    ERROR = "error"  # any status/code/message given in the fault


_DEFAULTS: dict[FaultKind, vendor.VendorError] = {
    FaultKind.UNAVAILABLE: vendor.UNAVAILABLE,
    FaultKind.INTERNAL: vendor.INTERNAL_ERROR,
    FaultKind.THROTTLE: vendor.THROTTLED,
    FaultKind.NOT_FOUND: vendor.RUN_NOT_FOUND,
    FaultKind.BAD_CREDENTIALS: vendor.INVALID_ACCESS_KEY,
    FaultKind.ERROR: vendor.INTERNAL_ERROR,
}

_ids = itertools.count(1)


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    run_id: str | None = None
    action: str | None = None
    count: int | None = None
    # Window on the emulator clock, [start, until); None leaves that side open.
    start: float | None = None
    until: float | None = None
    delay: float = 0.0
    status: int | None = None
    code: str | None = None
    message: str | None = None
    retry_after_ms: int | None = None
    fault_id: str = field(default_factory=lambda: f"fault-{next(_ids)}")
    hits: int = 0

    def error(self) -> vendor.VendorError:
        base = _DEFAULTS.get(self.kind, vendor.INTERNAL_ERROR)
        return vendor.VendorError(self.status or base.status, self.code or base.code, self.message or base.message)

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.hits >= self.count

    def active(self, now: float) -> bool:
        if self.exhausted:
            return False
        if self.start is not None and now < self.start:
            return False
        return self.until is None or now < self.until

    def matches(self, action: str, run_ids: Collection[str], now: float) -> bool:
        if self.action is not None and self.action != action:
            return False
        if self.run_id is not None and self.run_id not in run_ids:
            return False
        return self.active(now)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, now: float) -> Fault:
        """Control-API shape: ``{"kind", "runId", "action", "count", "after", "duration", "delay", "status",
        "code", "message", "retryAfterMs"}``; ``after``/``duration`` are seconds on the emulator clock."""
        start = now + float(data["after"]) if data.get("after") is not None else None
        until = None
        if data.get("duration") is not None:
            until = (start if start is not None else now) + float(data["duration"])
        return cls(
            kind=FaultKind(data["kind"]),
            run_id=data.get("runId"),
            action=data.get("action"),
            count=int(data["count"]) if data.get("count") is not None else None,
            start=start,
            until=until,
            delay=float(data.get("delay") or 0.0),
            status=int(data["status"]) if data.get("status") is not None else None,
            code=data.get("code"),
            message=data.get("message"),
            retry_after_ms=int(data["retryAfterMs"]) if data.get("retryAfterMs") is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.fault_id,
            "kind": str(self.kind),
            "runId": self.run_id,
            "action": self.action,
            "count": self.count,
            "start": self.start,
            "until": self.until,
            "delay": self.delay,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "retryAfterMs": self.retry_after_ms,
            "hits": self.hits,
        }


@dataclass(frozen=True, slots=True)
class Selection:
    """What the faults decided for one request: extra delay, and at most one outcome-changing fault.

    ``hidden`` are run ids a run-scoped not_found fault removes from a multi-run answer."""

    delay: float = 0.0
    fault: Fault | None = None
    hidden: frozenset[str] = frozenset()


NO_FAULT = Selection()


class FaultSet:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault_id: str) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.fault_id != fault_id]
            return len(self._faults) != before

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def __len__(self) -> int:
        return len(self._faults)

    def select(self, action: str, run_ids: Collection[str], now: float, *, multi: bool = False) -> Selection:
        """Picks the faults for one request and uses up one of each matched fault's calls.

        ``multi``: the call answers for several runs (list calls); a run-scoped not_found fault then hides
        that run from the answer instead of failing the whole call, as a deleted run would."""
        if not self._faults:  # the common case in the benchmark: no lock, no work
            return NO_FAULT
        delay = 0.0
        chosen: Fault | None = None
        hidden: set[str] = set()
        with self._lock:
            for fault in self._faults:
                if not fault.matches(action, run_ids, now):
                    continue
                if fault.kind is FaultKind.LATENCY:
                    fault.hits += 1
                    delay += fault.delay
                elif multi and fault.kind is FaultKind.NOT_FOUND and fault.run_id is not None:
                    fault.hits += 1
                    hidden.add(fault.run_id)
                elif chosen is None:
                    fault.hits += 1
                    chosen = fault
                    delay += fault.delay
            self._faults = [f for f in self._faults if not f.exhausted]
        return Selection(delay=delay, fault=chosen, hidden=frozenset(hidden))

"""Status writes through an API server outage: wait together, go again together; one object's refusals are its own.

Without this, each failed write was retried with the PAI backoff of its own run (5, 10, 20, 40, 80 s ...), so the
last of a few changed runs showed its status more than a minute after the API server was back. Here a failure
the API server itself causes (unreachable, timeouts, 5xx, 429, the 403s of RBAC warming up after a restart)
closes the gate; the waiting writers probe in turn with their own writes at a short capped backoff, and they all
go as soon as a probe gets through.

What is about one object never closes the gate: an admission policy's 403, a 422, a status too large for etcd,
a 404 or 409 are raised to that object's writer at once (its own retry with backoff). A server-side error of one
object alone (a webhook that fails for it only) is raised too: the gate closes when two different objects fail
in a row, or at once when the API server cannot be reached at all. Probers take turns, so an object whose own
writes keep failing cannot keep every other write waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import TypeVar

from paiflow_operator.kube import KubeError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Statuses the API server answers for reasons of its own, whatever the object: overload (429, APF), errors and
# unavailability of it or of etcd (5xx), timeouts (408, 504), and 403 while RBAC warms up after a restart.
SERVER_STATUSES = frozenset({403, 408, 429, 500, 502, 503, 504})
# A 403 that is about the object, not the caller: an admission webhook or ValidatingAdmissionPolicy said no.
ADMISSION_MARKERS = ("admission webhook", "ValidatingAdmissionPolicy", "denied the request", "denied request")
# etcd refuses an object over its size limit (1.5 MiB by default); the API server passes that on as a 500 or 413.
TOO_LARGE_MARKERS = ("too large", "too long", "request entity")


class Trouble(Enum):
    OBJECT = "object"  # about this object: its writer's own retry
    SERVER = "server"  # the API server's: closes the gate when more than one object sees it
    UNREACHABLE = "unreachable"  # no answer at all: closes the gate at once


def classify(exc: BaseException) -> Trouble:
    if not isinstance(exc, KubeError):
        # Connection refused/reset, timeouts: the kubernetes client raises urllib3's errors as they come.
        return Trouble.UNREACHABLE if isinstance(exc, Exception) else Trouble.OBJECT
    if exc.status == 0:
        return Trouble.UNREACHABLE
    text = f"{exc.reason} {exc.message}"
    if exc.status == 413 or (exc.status == 500 and any(m in text.lower() for m in TOO_LARGE_MARKERS)):
        return Trouble.OBJECT
    if exc.status == 403 and any(m.lower() in text.lower() for m in ADMISSION_MARKERS):
        return Trouble.OBJECT
    return Trouble.SERVER if exc.status in SERVER_STATUSES else Trouble.OBJECT


def is_transient(exc: BaseException) -> bool:
    """The API server's trouble rather than the object's."""
    return classify(exc) is not Trouble.OBJECT


def is_too_large(exc: BaseException) -> bool:
    """The object (its status) is over the size the API server or etcd stores."""
    return isinstance(exc, KubeError) and classify(exc) is Trouble.OBJECT and exc.status in (413, 500)


class WriteGate:
    def __init__(
        self,
        base: float = 0.5,
        cap: float = 4.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._base = base
        self._cap = cap
        self._sleep = sleep
        self._open = asyncio.Event()
        self._open.set()
        # Writers take turns to probe, first come first served (asyncio.Lock wakes its waiters in order).
        self._turn = asyncio.Lock()
        self._delay = base
        # Objects whose writes failed with the server's kind of error since the last success (two at most).
        self._failing: set[object] = set()
        self.closed_count = 0  # times the gate closed: a metric of API server trouble

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def write(self, attempt: Callable[[], Awaitable[T]], who: object = None) -> T:
        """Runs ``attempt`` (a write of object ``who``) once the gate is open; retries it through an outage.
        An error about the object is raised at once; so is the server's kind of error if this object alone
        sees it, or if this write already closed the gate once."""
        who = object() if who is None else who  # writers that do not say are each their own object
        closed_once = False
        while True:
            if not self._open.is_set():
                probed: list[T] = []
                if await self._probe(attempt, probed):
                    return probed[0]
                continue
            try:
                result = await attempt()
            except Exception as exc:
                trouble = classify(exc)
                if trouble is Trouble.OBJECT or closed_once:
                    raise
                if len(self._failing) < 2:
                    self._failing.add(who)
                if trouble is Trouble.SERVER and len(self._failing) < 2:
                    raise  # one object alone: its own retry, nobody else waits
                closed_once = True
                if self._open.is_set():
                    self._close(exc)
                continue
            self._failing.clear()
            return result

    async def _probe(self, attempt: Callable[[], Awaitable[T]], result: list[T]) -> bool:
        """Waits for this writer's turn; then, if the gate is still closed, probes with its write. True when the
        probe got through (its answer appended to ``result``), False to look at the gate again."""
        async with self._turn:
            if self._open.is_set():
                return False
            await self._sleep(self._delay)
            self._delay = min(self._delay * 2, self._cap)
            if self._open.is_set():
                return False
            try:
                result.append(await attempt())
            except Exception as exc:
                if classify(exc) is Trouble.OBJECT:
                    raise  # this object's own problem: the next writer probes
                return False  # still down: back to the end of the line
            log.info("Kubernetes API server takes status writes again")
            self._delay = self._base
            self._failing.clear()
            self._open.set()
            return True

    def _close(self, exc: BaseException) -> None:
        self._open.clear()
        self.closed_count += 1
        log.warning(
            "status write failed (%s): holding status writes until the API server takes them again", _describe(exc)
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KubeError):
        return f"{exc.status} {exc.reason}"
    return type(exc).__name__

"""Status writes through an API server outage: wait together, go again together.

Without this, each failed write was retried with the PAI backoff of its own run (5, 10, 20, 40, 80 s ...), so the
last of a few changed runs showed its status more than a minute after the API server was back. Here the first
write that fails for a reason the API server itself causes (unreachable, 5xx, 429, the 403s of RBAC warming up
after a restart) closes the gate; one writer probes with its own write at a short capped backoff while the
others wait, and they all go as soon as a probe gets through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from paiflow_operator.kube import KubeError

log = logging.getLogger(__name__)

T = TypeVar("T")

# 403 is here because RBAC answers it for a few seconds after an API server restart; a real lack of permission
# keeps one probe going every `cap` seconds, and the log says so.
TRANSIENT_STATUSES = frozenset({0, 403, 408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, KubeError):
        return exc.status in TRANSIENT_STATUSES
    # Connection refused/reset, timeouts: the kubernetes client raises urllib3's errors as they come.
    return isinstance(exc, Exception)


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
        self._probing = False
        self._delay = base
        self.closed_count = 0  # times the gate closed: a metric of API server trouble

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def write(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Runs ``attempt`` once the gate is open; retries it through an outage. A non-transient error
        (404, 409, 422, ...) is raised to the caller at once."""
        while True:
            if not self._open.is_set():
                if self._probing:
                    # Someone probes; wake up now and then in case that writer gave up (its run was deleted).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._open.wait(), self._cap)
                    continue
                self._probing = True
                try:
                    await self._sleep(self._delay)
                    self._delay = min(self._delay * 2, self._cap)
                    try:
                        result = await attempt()
                    except Exception as exc:
                        if is_transient(exc):
                            continue
                        raise
                    log.info("Kubernetes API server takes status writes again")
                    self._delay = self._base
                    self._open.set()
                    return result
                finally:
                    self._probing = False
            try:
                return await attempt()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if self._open.is_set():
                    self._open.clear()
                    self.closed_count += 1
                    log.warning(
                        "status write failed (%s): holding status writes until the API server takes them again",
                        _describe(exc),
                    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KubeError):
        return f"{exc.status} {exc.reason}"
    return type(exc).__name__

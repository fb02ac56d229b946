"""The emulator's run clock: wall time plus an offset that tests move forward instead of sleeping."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class Clock:
    """Seconds since the epoch, as floats.

    ``Clock()`` follows real time; ``advance`` adds to a fixed offset. ``Clock(frozen_at=t)`` stands still
    at ``t`` and moves only when advanced, for tests that need exact durations.
    """

    def __init__(self, *, frozen_at: float | None = None) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        self._frozen_at = frozen_at

    def now(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Moves the clock forward (or back, if negative). Returns the new now()."""
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds
        return self.now()

    @property
    def offset(self) -> float:
        """How far ahead of the wall clock this clock runs (0 for a frozen clock's notion of wall time)."""
        return self._offset if self._frozen_at is None else self._frozen_at - time.time()


def iso_utc(epoch: float) -> str:
    """PAI's timestamp format: ``2021-01-30T12:51:33.028Z`` (milliseconds, UTC)."""
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

"""The process's memory upkeep: long-lived objects kept out of the garbage collector's way, freed heap handed back.

At 10,000 runs the operator holds millions of objects (the runs' records, kopf's and the clients' state), and a
full (generation 2) collection walks them all with the event loop stopped: 0.3-0.5 s each, about ten a minute
while a burst of status writes replaces statuses (measured in a mass finish of 7,500 runs: 5.6 s of 60 in the
collector, no write sent meanwhile). After each full collection its survivors are frozen (``gc.freeze``: moved
to the permanent generation, which collections skip), so the next ones walk only what was made since. Frozen
objects are still freed by reference counting; only garbage in a reference cycle among them would outlive its
use, so every ``thaw_every`` seconds they are thawed and the next full collection walks everything once more.

glibc keeps freed heap pages for reuse, so the peak of an initial list (10,000 objects parsed at once) would
otherwise stay in the RSS for the life of the process: ``malloc_trim`` hands them back now and then.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import time
from collections.abc import Callable
from typing import Any


class GcFreezer:
    """A ``gc.callbacks`` entry: freezes what survives each full collection; thaws it all now and then."""

    def __init__(self, thaw_every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.thaw_every = thaw_every
        self.clock = clock
        self._thawed_at = clock()
        self.freezes = 0
        self.thaws = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info.get("generation") == 2:
            gc.freeze()
            self.freezes += 1

    def thaw_if_due(self) -> bool:
        """Thaws the frozen objects once ``thaw_every`` has passed: the next full collection walks them all."""
        now = self.clock()
        if now - self._thawed_at < self.thaw_every:
            return False
        gc.unfreeze()
        self._thawed_at = now
        self.thaws += 1
        return True

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
        gc.unfreeze()


def _malloc_trim() -> Callable[[], None] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None  # not glibc (e.g. musl): nothing to trim
    return lambda: libc.malloc_trim(0)


async def upkeep(freezer: GcFreezer | None, first: float = 15.0, every: float = 60.0) -> None:
    """Soon after the initial list, then every ``every`` seconds: thaw if due, hand freed heap back."""
    trim = _malloc_trim()
    await asyncio.sleep(first)
    while True:
        if freezer is not None:
            freezer.thaw_if_due()
        if trim is not None:
            trim()
        await asyncio.sleep(every)

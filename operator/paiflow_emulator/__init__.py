"""A stand-in for Alibaba Cloud PAI Flow, for tests, the benchmark and the local demo.

Public API: ``Emulator`` (asyncio), ``EmulatorThread`` (background loop for sync callers), ``Clock``,
``Timeline``/``Phase``, ``Run``, ``FaultKind``/``Fault``. The wire protocol, the control API and the vendor
error codes are documented in ``server`` and ``vendor``.
"""

from __future__ import annotations

from .clock import Clock, iso_utc
from .counters import Snapshot
from .faults import Fault, FaultKind
from .runs import Run
from .server import Emulator
from .thread import EmulatorThread
from .timeline import TERMINAL, Phase, RunState, Timeline
from .vendor import VendorError

__all__ = [
    "TERMINAL",
    "Clock",
    "Emulator",
    "EmulatorThread",
    "Fault",
    "FaultKind",
    "Phase",
    "Run",
    "RunState",
    "Snapshot",
    "Timeline",
    "VendorError",
    "iso_utc",
]

"""Fixtures for tests that talk to the PAI emulator over real sockets.

The emulator knows one long-term key (``ACCESS_KEY``) and one STS credential (``STS_KEY`` with
``STS_TOKEN``). Its run clock is frozen at ``RUN_CLOCK_START`` and moves only through ``advance``; request
signatures are still checked against the wall clock, so clients sign normally.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from paiflow_emulator import Clock, Emulator, EmulatorThread

ACCESS_KEY = ("LTAI5tIntegrationKey", "integration-secret")
STS_KEY = ("STS.NUintegrationTemp", "sts-temp-secret")
STS_TOKEN = "CAIS-integration-security-token"
RUN_CLOCK_START = 1_700_000_000.0


def _emulator() -> Emulator:
    return Emulator(
        {ACCESS_KEY[0]: ACCESS_KEY[1], STS_KEY[0]: STS_KEY[1]},
        {STS_TOKEN: STS_KEY[0]},
        clock=Clock(frozen_at=RUN_CLOCK_START),
    )


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A started emulator on the test's own event loop."""
    emu = _emulator()
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
def emulator_thread() -> Iterator[EmulatorThread]:
    """A started emulator in a background loop, for synchronous clients such as the vendor SDK."""
    with EmulatorThread(_emulator()) as thread:
        yield thread

"""Runs an Emulator in a background event loop, for synchronous callers (the vendor SDK, sync tests)."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from .server import Emulator


class EmulatorThread:
    """``with EmulatorThread(keys={"ak": "secret"}) as emu: emu.url; emu.emulator.add_run(...)``.

    Accepts Emulator's arguments, or a ready ``emulator=``. The emulator's public methods are thread-safe,
    so the caller uses ``.emulator`` directly from its own thread."""

    def __init__(self, emulator: Emulator | None = None, **kwargs: Any) -> None:
        if emulator is None:
            kwargs.setdefault("keys", {})
            emulator = Emulator(**kwargs)
        elif kwargs:
            raise TypeError("pass either an Emulator or its arguments, not both")
        self.emulator = emulator
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the emulator thread is not started")
        return self._url

    @property
    def endpoint(self) -> str:
        return self.url.removeprefix("http://")

    def start(self, timeout: float = 10.0) -> str:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="paiflow-emulator", daemon=True)
        self._thread.start()
        ready.wait(timeout)
        self._url = asyncio.run_coroutine_threadsafe(self.emulator.start(), loop).result(timeout)
        return self._url

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.emulator.stop(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._loop = self._thread = None
            self._url = None

    def __enter__(self) -> EmulatorThread:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

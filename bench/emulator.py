"""The PAI emulator in its own process (its CPU must not mix with the benchmark's or the operator's), driven
over its control API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from bench.observe import EmulatorCounters, iter_chunks
from bench.procs import Child, clean_env, python_child
from bench.scenario import BenchRun


class EmulatorProcess:
    def __init__(
        self,
        workdir: Path,
        name: str,
        keys: dict[str, str],
        latency: float,
        qps_limit: float | None,
        qps_burst: float | None = None,
    ) -> None:
        self.name = name
        self.url_file = workdir / f"{name}.url"
        args = ["--port", "0", "--latency", str(latency), "--url-file", str(self.url_file)]
        for access_key_id, secret in keys.items():
            args += ["--keys", f"{access_key_id}:{secret}"]
        if qps_limit:
            # Burst defaults to the rate: "never more than the limit" then means "never throttled".
            args += ["--qps-limit", str(qps_limit), "--qps-burst", str(qps_burst or qps_limit)]
        self.qps_limit = qps_limit
        self.child: Child = python_child(name, "paiflow_emulator", args, clean_env({}), workdir / f"{name}.log")
        self.url = ""
        self.counters: EmulatorCounters | None = None

    def start(self, timeout: float = 30.0) -> EmulatorProcess:
        self.url_file.unlink(missing_ok=True)
        self.child.start()
        deadline = time.monotonic() + timeout
        while not self.url_file.exists():
            if not self.child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"emulator {self.name} did not start:\n{self.child.log_tail()}")
            time.sleep(0.05)
        self.url = self.url_file.read_text().strip()
        self.child.wait_http(f"{self.url}/_emulator/health", timeout)
        self.counters = EmulatorCounters(self.url)
        return self

    def start_sampling(self) -> None:
        assert self.counters is not None
        self.counters.start()

    def stop(self) -> None:
        if self.counters is not None:
            self.counters.stop()
        self.child.stop(grace=5)

    def add_runs(self, runs: list[BenchRun]) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as client:
            for chunk in iter_chunks(runs, 1000):
                response = client.post("/_emulator/runs", json={"runs": [r.emulator_json() for r in chunk]})
                response.raise_for_status()

    async def transition_many(self, changes: list[tuple[str, list[list[Any]]]], batch: int = 2000) -> dict[str, float]:
        """Changes each run's course now, many at one instant (the emulator's batch transition: one request per
        `batch` runs, so that ending thousands at once is not spread over the seconds that thousands of single
        requests take); returns when (epoch) each change took effect."""
        done: dict[str, float] = {}
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            for start in range(0, len(changes), batch):
                chunk = changes[start : start + batch]
                body = {"transitions": [{"id": run_id, "timeline": timeline} for run_id, timeline in chunk]}
                before = time.time()
                response = await client.post("/_emulator/transitions", json=body)
                response.raise_for_status()
                # The emulator cut every timeline of the batch at one instant between these two.
                at = (before + time.time()) / 2
                done.update((run_id, at) for run_id, _ in chunk)
        return done

"""Fair sharing of PAI calls: how long a quiet namespace's polls wait while another namespace floods.

    python -m bench.fairness --flood 1000 --quiet 20 --interval 5 --qps 50 --seconds 30

One namespace has `flood` runs that cannot be batched, polled every `interval` seconds (far more calls than
`qps` allows); another has `quiet` runs on the same interval. The scheduler (the operator's own: heap, slots,
rate limit, PaiClient) polls the PAI emulator in its own process over HTTP, twice in one run: once with the
first-come-first-served token bucket and semaphore every namespace shared before, once with the fair limiter.
A poll's delay is from the moment it fell due to the moment its call left. Prints and saves
(bench/results/fairness.json) the quiet namespace's worst and median delay with each, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.emulator import EmulatorProcess
from bench.run import ACCESS_KEY_ID, ACCESS_KEY_SECRET, RESULTS, log
from paiflow_operator.access.view import AccessView
from paiflow_operator.conditions import Event
from paiflow_operator.guards.ratelimit import TokenBucket
from paiflow_operator.kube import ObjectRef
from paiflow_operator.pai.client import PaiClient
from paiflow_operator.pai.credentials import CredentialSource, StaticCredentialSource
from paiflow_operator.pai.models import PipelineRun, RunStatusList
from paiflow_operator.pai_access import PaiAccess
from paiflow_operator.runs.scheduler import Scheduler
from paiflow_operator.runs.writes import RunWriter
from paiflow_operator.settings import Settings

FLOOD_NS, QUIET_NS = "flood", "quiet"
WORKSPACE = "ws-fair"


class MemoryKube:
    """Status writes kept in memory: this benchmark is about PAI calls, not the API server."""

    def __init__(self) -> None:
        self.version = 0

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        return {"status": patch, "metadata": {"resourceVersion": str(self.version)}}

    async def create_event(self, ref: ObjectRef, event: Event, now: Any = None) -> None:
        return None

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes]:
        raise KeyError(name)

    async def patch_finalizers(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("nothing is launched in this benchmark")

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str]:
        raise AssertionError("nothing is launched in this benchmark")


class FifoSlots:
    """What served every namespace before: one FIFO semaphore for the calls in flight."""

    def __init__(self, limit: int) -> None:
        self._semaphore = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def slot(self, tenant: str = "", weight: float = 1.0) -> AsyncIterator[None]:
        async with self._semaphore:
            yield


@dataclass
class Measured:
    delays: dict[str, list[float]]
    calls: dict[str, int]


class TimedPai:
    """PaiClient, with the moment each call leaves noted against the moment its run fell due."""

    def __init__(self, client: PaiClient, scheduler_clock: Any) -> None:
        self.client = client
        self.clock = scheduler_clock
        self.due: dict[str, float] = {}  # run id -> when its current poll fell due
        self.namespace: dict[str, str] = {}
        self.delays: dict[str, list[float]] = {FLOOD_NS: [], QUIET_NS: []}
        self.calls: dict[str, int] = {FLOOD_NS: 0, QUIET_NS: 0}
        self.measuring = False

    async def get_pipeline_run(self, run_id: str, **kwargs: Any) -> PipelineRun:
        due = self.due.pop(run_id, None)
        namespace = self.namespace[run_id]
        if self.measuring and due is not None:
            self.delays[namespace].append(self.clock() - due)
            self.calls[namespace] += 1
        return await self.client.get_pipeline_run(run_id, **kwargs)

    async def list_pipeline_runs_status(
        self, workspace_id: str, run_ids: Any, *, region: str, credentials: CredentialSource
    ) -> RunStatusList:
        raise AssertionError("batching is off in this benchmark")

    async def aclose(self) -> None:
        await self.client.aclose()


async def _variant(
    fair: bool, url: str, flood: int, quiet: int, interval: float, qps: float, seconds: float
) -> Measured:
    settings = Settings(
        endpoint_override=url,
        qps=qps,
        burst=int(qps),
        batch_status=False,  # unbatchable polls: every run costs a call per interval
        default_poll_interval=timedelta(seconds=interval),
        min_poll_interval=timedelta(seconds=min(interval, 5)),
        initial_jitter=timedelta(seconds=interval),
        leases=False,
    )
    client = PaiClient(endpoint_override=url, max_connections=settings.concurrency)
    pai = TimedPai(client, time.monotonic)
    kube = MemoryKube()
    # Both namespaces allowed as the operator (the policy check is not what is measured here).
    access = PaiAccess(
        settings,
        pai,  # type: ignore[arg-type]
        kube,
        StaticCredentialSource(ACCESS_KEY_ID, ACCESS_KEY_SECRET),
        policies=AccessView(allow_all=True),
    )
    if not fair:
        access.limiter = TokenBucket(settings.qps, settings.burst)
        access.in_flight = FifoSlots(settings.concurrency)
    scheduler = Scheduler(settings, access, RunWriter(kube))  # type: ignore[arg-type]
    original_dispatch = scheduler.sync._dispatch

    def dispatch(due: list[Any]) -> None:
        for tracked in due:
            pai.due[tracked.run_id] = tracked.due if tracked.due is not None else time.monotonic()
        original_dispatch(due)

    scheduler.sync._dispatch = dispatch  # type: ignore[method-assign]
    for namespace, count in ((FLOOD_NS, flood), (QUIET_NS, quiet)):
        for i in range(count):
            run_id = _run_id(namespace, i)
            pai.namespace[run_id] = namespace
            body = {
                "metadata": {"namespace": namespace, "name": f"r{i}", "uid": f"{namespace}-{i}", "generation": 1},
                "spec": {"pipelineRunId": run_id, "workspaceId": WORKSPACE},
                "status": {},
            }
            scheduler.observe(body, "ADDED")
    loop = asyncio.create_task(scheduler.run())
    try:
        # The first interval spreads the first polls (initial jitter); measure from then on.
        await asyncio.sleep(interval)
        pai.measuring = True
        await asyncio.sleep(seconds)
        pai.measuring = False
    finally:
        await scheduler.stop()
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await client.aclose()
    return Measured(pai.delays, pai.calls)


def _run_id(namespace: str, i: int) -> str:
    return f"flow-{namespace}{i:05d}"


def _summary(measured: Measured) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for namespace, delays in measured.delays.items():
        out[namespace] = {
            "polls": measured.calls[namespace],
            "worst_delay_s": round(max(delays, default=0.0), 3),
            "median_delay_s": round(statistics.median(delays), 3) if delays else None,
        }
    return out


def run_fairness(
    flood: int, quiet: int, interval: float, qps: float, seconds: float, latency: float, workdir: Path
) -> dict[str, Any]:
    emulator = EmulatorProcess(workdir, "emulator", {ACCESS_KEY_ID: ACCESS_KEY_SECRET}, latency, None)
    emulator.start()
    try:
        now = time.time()
        runs = [
            {
                "id": _run_id(ns, i),
                "workspaceId": WORKSPACE,
                "name": f"{ns}-{i}",
                "createdAt": now - 60,
                "timeline": [["Running", None, None]],
            }
            for ns, count in ((FLOOD_NS, flood), (QUIET_NS, quiet))
            for i in range(count)
        ]
        import httpx

        with httpx.Client(base_url=emulator.url, timeout=60) as http:
            http.post("/_emulator/runs", json={"runs": runs}).raise_for_status()
        results: dict[str, Any] = {
            "flood_runs": flood,
            "quiet_runs": quiet,
            "interval_s": interval,
            "qps": qps,
            "seconds": seconds,
        }
        for name, fair in (("fifo", False), ("fair", True)):
            log(f"fairness: {name}: {flood} flooding runs and {quiet} quiet ones, every {interval:g}s at {qps:g} qps")
            results[name] = _summary(asyncio.run(_variant(fair, emulator.url, flood, quiet, interval, qps, seconds)))
        fifo, fair_ = results["fifo"][QUIET_NS]["worst_delay_s"], results["fair"][QUIET_NS]["worst_delay_s"]
        results["quiet_worst_delay_ratio_fifo_to_fair"] = round(fifo / fair_, 1) if fair_ else None
        results["quiet_worst_delay_in_intervals_fair"] = round(fair_ / interval, 3)
        return results
    finally:
        emulator.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__.split("\n")[0])
    parser.add_argument("--flood", type=int, default=1000)
    parser.add_argument("--quiet", type=int, default=20)
    parser.add_argument("--interval", type=float, default=5)
    parser.add_argument("--qps", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="paiflow-fairness-"))).resolve()
    result = run_fairness(args.flood, args.quiet, args.interval, args.qps, args.seconds, args.latency, workdir)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fairness.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

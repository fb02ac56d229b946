"""The priced reads (issue 19) at scale: N active runs, status polling at full speed beside them.

    python -m bench.inside --n 1000 10000 --seconds 60

Runs the operator's InsideReader and a status-polling load through one real door (pai_access) and client
against the PAI emulator (in-process, no Kubernetes: what is measured is PAI calls). Prints and saves
(bench/results/inside.json), for each N: priced calls per progress interval against their budget, status calls a
second (what polling kept of the QPS), how many runs had their progress read, and the progress age reached
(the oldest read, and the full cycle N / budget it converges to).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from paiflow_emulator import Emulator, Timeline
from paiflow_operator.access.view import AccessView
from paiflow_operator.api.runs import PaiPipelineRunSpec
from paiflow_operator.conditions import Event
from paiflow_operator.pai.client import PaiClient
from paiflow_operator.pai.credentials import StaticCredentialSource
from paiflow_operator.pai_access import Action, Caller, PaiAccess
from paiflow_operator.runs.inside_reads import InsideReader
from paiflow_operator.runs.tracked import Key, Tracked
from paiflow_operator.settings import Settings

KEY = ("LTAI5tBenchInsideKey1", "bench-inside-secret")
RESULTS = Path(__file__).parent / "results"


class NoSecrets:
    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes]:
        raise LookupError(name)


async def measure(n: int, seconds: float, qps: float, share: float, interval: float) -> dict[str, Any]:
    emulator = Emulator({KEY[0]: KEY[1]})
    await emulator.start()
    settings = Settings(
        qps=qps, burst=int(qps), inside_qps_share=share, inside_burst=2, progress_interval=timedelta(seconds=interval)
    )
    client = PaiClient(endpoint_override=emulator.url, max_connections=settings.concurrency)
    access = PaiAccess(settings, client, NoSecrets(), StaticCredentialSource(*KEY), policies=AccessView(allow_all=True))
    runs: dict[Key, Tracked] = {}
    for i in range(n):
        run = emulator.add_run(Timeline.running_forever())
        spec = PaiPipelineRunSpec(pipelineRunId=run.run_id)
        status = {"runStatus": "Running", "nodeId": run.node_id, "pipelineRunId": run.run_id}
        runs[("bench", f"r{i}")] = Tracked("bench", f"r{i}", f"u{i}", 1, spec, status)
    writes = 0

    async def write(tracked: Tracked, patch: dict[str, Any], events: list[Event]) -> None:
        nonlocal writes
        writes += 1
        tracked.status = {**tracked.status, **patch}

    reader = InsideReader(settings, access, runs.get, write)
    for tracked in runs.values():
        reader.note(tracked)
    status_calls = 0
    ids = [t.run_id for t in runs.values()]

    async def poll() -> None:  # status polling, as fast as the door lets it
        nonlocal status_calls
        who = Caller("bench", "PaiPipelineRun", "r", Action.FOLLOW, "cn-hangzhou")
        i = 0
        while True:
            await access.get_pipeline_run(who, ids[i % len(ids)])
            status_calls += 1
            i += 1

    emulator.reset_counters()
    started = time.monotonic()
    reader.start()
    pollers = [asyncio.create_task(poll()) for _ in range(8)]
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    for task in pollers:
        task.cancel()
    await reader.stop()
    priced = emulator.counters.snapshot().actions.get("GetPipelineRunNode", 0)
    read = len(reader._last_read)
    await client.aclose()
    await emulator.stop()
    budget = qps * share
    return {
        "n": n,
        "seconds": round(elapsed, 1),
        "qps": qps,
        "insideShare": share,
        "progressInterval": interval,
        "pricedCallsPerInterval": round(priced / elapsed * interval, 1),
        "pricedBudgetPerInterval": budget * interval,
        "statusCallsPerSecond": round(status_calls / elapsed, 2),
        "runsRead": read,
        "progressWrites": writes,
        "oldestProgressAgeSeconds": round(reader.oldest_progress_age() or elapsed, 1) if read >= n else None,
        "unreadAfterSeconds": n - read,
        "fullCycleSeconds": round(max(interval, n / budget), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--qps", type=float, default=10)
    parser.add_argument("--share", type=float, default=0.2)
    parser.add_argument("--interval", type=float, default=120)
    args = parser.parse_args(argv)
    rows = []
    for n in args.n:
        row = asyncio.run(measure(n, args.seconds, args.qps, args.share, args.interval))
        print(json.dumps(row), flush=True)
        rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inside.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

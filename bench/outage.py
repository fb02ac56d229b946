"""A PAI outage at scale: N runs in sync, then every PAI call fails (503) for a while.

    python -m bench.outage --n 10000 --outage 60

Prints and saves (bench/results/outage.json) what the outage cost: PAI calls while it lasted, status writes and
Events (per run at most, and in all), and how long after PAI's return the status changes that happened during
the outage showed, and whether every run reads Ready=True again. The operator runs with its shipped error
grace, circuit breaker and backoff; only the poll interval and QPS are the benchmark's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.emulator import EmulatorProcess
from bench.observe import ResourceWatch
from bench.run import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    OURS,
    RESULTS,
    Config,
    create_resources,
    log,
    start_cluster,
    start_operator,
    wait_until,
)
from bench.scenario import population
from bench.stats import lag_summary


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _ready(status: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def run_outage(n: int, outage: float, interval: float, qps: float, latency: float, workdir: Path) -> dict[str, Any]:
    cfg = Config(
        sizes=(n,),
        duration=0,
        naive_duration=0,
        interval=interval,
        qps=qps,
        pai_qps_limit=qps * 1.2,
        latency=latency,
        variants=(OURS,),
        merge=False,
        shards=0,
        rate_limit=0,
        rate_limit_seconds=0,
        restart_window=0,
        workdir=workdir,
    )
    with contextlib.ExitStack() as stack:
        cp = start_cluster(stack)
        kubeconfig = cp.service_account_kubeconfig(
            "paiflow-system", "paiflow-operator", workdir / "sa.kubeconfig", 14400
        )
        emulator = EmulatorProcess(workdir, "emulator", {ACCESS_KEY_ID: ACCESS_KEY_SECRET}, latency, None)
        stack.callback(emulator.stop)
        emulator.start()
        assert emulator.counters is not None
        runs = population(n, time.time())
        emulator.add_runs(runs)
        log(f"outage: creating {n} resources")
        create_resources(cp, runs)
        watch = ResourceWatch(cp.workdir, cp.server)
        stack.callback(watch.stop)
        watch.start()
        operator = start_operator(OURS, cfg, kubeconfig, emulator.url, workdir / "operator.log")
        stack.callback(operator.child.stop)
        wait_until(lambda: watch.count_with_status() >= n, n / qps * 3 + 300, "every run's first status")
        log("outage: all in sync; settling for two intervals")
        time.sleep(2 * interval)

        writes_before = _metric(operator.metrics(), "paiflow_kube_writes_total", kind="status")
        events_before = _metric(operator.metrics(), "paiflow_kube_writes_total", kind="event")
        calls_before = emulator.counters.fetch()["total"]
        start = time.time()
        with httpx.Client(base_url=emulator.url, timeout=30) as client:
            client.post("/_emulator/faults", json={"kind": "unavailable", "duration": outage}).raise_for_status()
        log(f"outage: every PAI call fails for {outage:.0f}s")
        time.sleep(outage)
        end = time.time()
        calls_during = emulator.counters.fetch()["total"] - calls_before
        text = operator.metrics()
        writes_during = _metric(text, "paiflow_kube_writes_total", kind="status") - writes_before
        events_during = _metric(text, "paiflow_kube_writes_total", kind="event") - events_before

        changed = [r for r in runs if r.status_at(start) != r.status_at(end)]
        wanted = {(r.key, r.status_at(end)) for r in changed}
        wait_until(
            lambda: all(w in watch.first_seen for w in wanted), 10 * interval + 120, "the outage's changes to show"
        )
        lags = [max(0.0, watch.first_seen[w] - end) for w in wanted]
        time.sleep(interval)
        after = time.time()
        text = operator.metrics()
        writes_total = _metric(text, "paiflow_kube_writes_total", kind="status") - writes_before
        events_total = _metric(text, "paiflow_kube_writes_total", kind="event") - events_before
        per_run = Counter(e.key for e in watch.events_between(start, after) if e.type == "MODIFIED")
        not_ready = sum(1 for status in watch.last.values() if not _ready(status))
        return {
            "n": n,
            "outage_seconds": outage,
            "interval_seconds": interval,
            "qps": qps,
            "pai_calls_during_outage": int(calls_during),
            "status_writes_during_outage": int(writes_during),
            "events_during_outage": int(events_during),
            "changes_during_outage": len(changed),
            "status_writes_outage_and_recovery": int(writes_total),
            "events_outage_and_recovery": int(events_total),
            "max_writes_per_run": max(per_run.values(), default=0),
            "runs_written_more_than_once": sum(1 for v in per_run.values() if v > 1),
            "changes_shown_after_return_s": lag_summary(lags, 0),
            "not_ready_at_end": not_ready,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--outage", type=float, default=60)
    parser.add_argument("--interval", type=float, default=30)
    parser.add_argument("--qps", type=float, default=50)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="paiflow-outage-"))).resolve()
    log(f"logs in {workdir}")
    result = run_outage(args.n, args.outage, args.interval, args.qps, args.latency, workdir)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "outage.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

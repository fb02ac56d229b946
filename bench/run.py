"""Scale benchmark: the operator as it ships vs a naive kopf-timer operator, for N = 100, 1,000, 10,000.

    python -m bench.run                                  # what `make bench` runs (sizes, baseline, shards)
    python -m bench.run --sizes 100,1000 --duration 180  # quicker
    python -m bench.run --shards 1000                    # only the shard check (three replicas, Leases)
    python -m bench.run --import 1000                    # only the PaiWorkspace import check

Operators: "ours" (per-run polls, batched status queries), "scan" (the same, plus one PaiWorkspace per
PAI workspace that imports nothing, so workspace scans answer for the hand-written runs) and "naive".
For each N and each operator, in this order, on a fresh control plane and a fresh emulator process:

1. N PaiPipelineRuns appear at once (created over the API in parallel before the operator starts; not
   timed) whose PAI runs follow scripted timelines (bench/scenario.py).
2. Initial sync: the operator starts and reads every run once. PAI calls, time, and the rate limit
   (the emulator enforces a QPS limit above PAIFLOW_QPS and counts throttles).
3. Steady state for --duration seconds: status lag for every scripted change, PAI calls, Kubernetes
   writes (the API server's own request counters and resourceVersion bumps seen by a watch), RSS and CPU.
4. Mass finish: most still-active runs end at once in PAI (emulator control API); time until all show.
5. Restart with N resources present, most finished: time to steady state and PAI calls, also for finished
   runs.

Before the operator starts, the API server's status-write ceiling is measured with a lean client
(bench/ceiling.py); the mass finish is reported against it. While those two are measured the control plane
is held to one CPU quota (--control-plane-cpus, bench/cpu_share.py), so both see a control plane of one size.

Everything started is stopped at the end, also on failure or Ctrl-C. Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from tests.support.controlplane import K8S_VERSION, ControlPlane
from tests.support.operator_process import free_port
from tests.support.policies import install_test_policy

from bench import ceiling, report
from bench.cpu_share import CpuShare, try_share
from bench.emulator import EmulatorProcess
from bench.observe import (
    RESOURCE_PATH,
    EmulatorCounters,
    ProcSampler,
    ResourceWatch,
    WatchEvent,
    apiserver_requests,
    kube_async_client,
    kube_client,
)
from bench.procs import REPO, Child, clean_env, python_child, read_proc
from bench.scenario import NAMESPACES, TERMINAL, BenchRun, changes_between, population, workspace_pairs
from bench.stats import cpu_and_rss, lag_summary
from paiflow_operator.replicas.sharding import rendezvous_owner

LEASE_SECONDS = 15.0  # the shipped PAIFLOW_LEASE_DURATION
ACCESS_KEY_ID = "LTAI5tBenchKey000001"
ACCESS_KEY_SECRET = "bench-secret-Qx7vW3nP4y"
RESULTS = REPO / "bench" / "results"
OURS, NAIVE = "ours", "naive"
# The operator with one PaiWorkspace per (namespace, PAI workspace) of the population, importing nothing
# (maxRuns 0): the same hand-written runs, answered by workspace scans instead of per-run polls (issue 12).
SCAN = "scan"
WORKSPACE_PATH = "/apis/paiflow-operator.dev/v1alpha1/namespaces/{namespace}/paiworkspaces"

Writes = Counter[tuple[str, str, str]]


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]
    duration: float  # steady-state window of the operator
    naive_duration: float  # steady-state window of the baseline: every tick looks alike, 4 intervals do
    interval: float
    qps: float
    pai_qps_limit: float
    latency: float
    variants: tuple[str, ...]
    merge: bool  # add to the existing bench/results/bench.json
    shards: int  # N for the shard check; 0: skip it
    rate_limit: int  # N for the shipped-rate-limit check; 0: skip it
    rate_limit_seconds: float
    restart_window: float
    workdir: Path
    import_n: int = 0  # N for the workspace import check; 0: skip it
    ceiling: bool = True  # measure the API server's status-write ceiling before each operator run
    results: Path = RESULTS
    # The operator under tracemalloc (bench/traced_operator.py): where memory goes, phase by phase. Its timings
    # are not the operator's.
    trace_memory: bool = False
    # Settings for the operator under test (--set PAIFLOW_X=V): to try a setting beside the shipped defaults.
    operator_env: tuple[tuple[str, str], ...] = ()
    # Cores of CPU quota for etcd + kube-apiserver + kube-controller-manager while the ceiling and the mass finish
    # are measured (0: none), so both are measured on a control plane of the same size (bench/cpu_share.py).
    control_plane_cpus: float = 1.5


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- cluster ----------------------------------------------------------------------------------------


def start_cluster(stack: contextlib.ExitStack) -> ControlPlane:
    cp = ControlPlane()
    stack.callback(cp.stop)
    cp.start()
    cp.kubectl("apply", "-f", str(REPO / "crds"))
    cp.kubectl("apply", "-k", str(REPO / "deploy" / "base"))
    cp.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/paipipelineruns.paiflow-operator.dev",
        "crd/paiworkspaces.paiflow-operator.dev",
        "--timeout=60s",
    )
    install_test_policy(cp)  # PaiAccessPolicy: these namespaces may use the operator
    namespaces = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"bench-{i}"}} for i in range(NAMESPACES)
    ]
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": namespaces}))
    return cp


def share_control_plane(
    cfg: Config, cp: ControlPlane, stack: contextlib.ExitStack, result: dict[str, Any]
) -> CpuShare | None:
    """The control plane's processes held to cfg.control_plane_cpus cores, when this machine lets us."""
    if not cfg.control_plane_cpus:
        result["control_plane_cpus"] = None
        return None
    share, why_not = try_share(cfg.control_plane_cpus)
    if share is None:
        log(f"no CPU quota for the control plane ({why_not}): the ratio includes the CPU the operator takes")
        result["control_plane_cpus"] = None
        result["control_plane_cpus_unavailable"] = why_not
        return None
    stack.callback(share.close)
    for pid in cp.pids.values():
        share.add(pid)
    result["control_plane_cpus"] = share.cores
    return share


async def _create_all(cp: ControlPlane, runs: list[BenchRun]) -> None:
    limit = asyncio.Semaphore(24)
    async with kube_async_client(cp.workdir, cp.server) as client:

        async def one(run: BenchRun) -> None:
            path = RESOURCE_PATH.replace("/paipipelineruns", f"/namespaces/{run.namespace}/paipipelineruns")
            async with limit:
                for attempt in range(8):
                    try:
                        response = await client.post(path, json=run.manifest())
                    except httpx.TransportError:
                        await asyncio.sleep(0.5 * (attempt + 1))
                        continue
                    if response.status_code in (201, 409):  # 409: an earlier attempt got through
                        return
                    if response.status_code in (429, 500, 503, 504):
                        await asyncio.sleep(0.5 * (attempt + 1))
                        continue
                    response.raise_for_status()
            raise RuntimeError(f"could not create {run.key}")

        await asyncio.gather(*(one(run) for run in runs))


async def _create_workspaces(cp: ControlPlane, pairs: list[tuple[str, str]], max_runs: int) -> None:
    async with kube_async_client(cp.workdir, cp.server) as client:
        for namespace, workspace in pairs:
            body = {
                "apiVersion": "paiflow-operator.dev/v1alpha1",
                "kind": "PaiWorkspace",
                "metadata": {"name": workspace, "namespace": namespace},
                "spec": {"workspaceId": workspace, "maxRuns": max_runs},
            }
            response = await client.post(WORKSPACE_PATH.format(namespace=namespace), json=body)
            response.raise_for_status()


def create_workspaces(cp: ControlPlane, runs: list[BenchRun], max_runs: int) -> int:
    """One PaiWorkspace per (namespace, PAI workspace) the population uses; returns how many."""
    pairs = workspace_pairs(runs)
    asyncio.run(_create_workspaces(cp, pairs, max_runs))
    return len(pairs)


def scan_env(cfg: Config) -> dict[str, str]:
    return {
        "PAIFLOW_WORKSPACE_SCAN_INTERVAL": f"{cfg.interval:g}s",
        "PAIFLOW_WORKSPACE_PAGE_SIZE": "100",
        "PAIFLOW_WORKSPACE_MAX_PAGES": "1000",
    }


def create_resources(cp: ControlPlane, runs: list[BenchRun]) -> float:
    started = time.monotonic()
    asyncio.run(_create_all(cp, runs))
    return time.monotonic() - started


def wait_until(check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool] | None = None) -> float:
    """Seconds waited; raises after `timeout` or when `alive` says the process under test died."""
    started = time.monotonic()
    while not check():
        if alive is not None and not alive():
            raise RuntimeError(f"process died while waiting for {what}")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - started


# ---- operators --------------------------------------------------------------------------------------


@dataclass
class Operator:
    child: Child
    health_port: int
    metrics_port: int
    trace_dir: Path | None = None

    def metrics(self) -> str:
        with httpx.Client(timeout=10) as client:
            return client.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text

    def trace(self, phase: str) -> None:
        """Under --trace-memory: the traced operator writes what it holds now (bench/traced_operator.py)."""
        if self.trace_dir is None or not self.child.alive():
            return
        before = set(self.trace_dir.glob("*-*.txt"))
        (self.trace_dir / "phase").write_text(phase)
        os.kill(self.child.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and set(self.trace_dir.glob("*-*.txt")) == before:
            time.sleep(0.5)
        log(f"memory trace {phase}: {self.trace_dir}")


def start_operator(
    variant: str,
    cfg: Config,
    kubeconfig: Path,
    endpoint: str,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    keys: tuple[str, str] = (ACCESS_KEY_ID, ACCESS_KEY_SECRET),
) -> Operator:
    health, metrics = free_port(), free_port()
    env = clean_env(
        {
            "KUBECONFIG": str(kubeconfig),
            "PAIFLOW_ENDPOINT_OVERRIDE": endpoint,
            "PAIFLOW_HEALTH_PORT": str(health),
            "PAIFLOW_METRICS_PORT": str(metrics),
            "ALIBABA_CLOUD_ACCESS_KEY_ID": keys[0],
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": keys[1],
            "PAIFLOW_DEFAULT_POLL_INTERVAL": f"{cfg.interval:g}s",
            "PAIFLOW_QPS": f"{cfg.qps:g}",
            "PAIFLOW_LOG_FORMAT": "json",
            "NAIVE_INTERVAL": f"{cfg.interval:g}",
            **dict(cfg.operator_env),
            **(extra_env or {}),
        }
    )
    module = "bench.naive_operator" if variant == NAIVE else os.environ.get("BENCH_OPERATOR_MODULE", "paiflow_operator")
    trace_dir = None
    if cfg.trace_memory and variant != NAIVE:
        module = "bench.traced_operator"
        trace_dir = log_path.with_suffix(".trace")
        env["PAIFLOW_BENCH_TRACE_DIR"] = str(trace_dir)
    child = python_child(variant, module, [], env, log_path).start()
    try:
        child.wait_http(f"http://127.0.0.1:{health}/healthz", timeout=120)
    except BaseException:
        child.stop()
        raise
    return Operator(child, health, metrics, trace_dir)


# ---- one N, one operator ------------------------------------------------------------------------------


@dataclass
class Point:
    """Everything read at one instant, so that a phase is the difference of two points."""

    epoch: float
    mono: float
    writes: Writes
    calls: dict[str, Any]  # the emulator's counters, with the per-run table

    @property
    def per_run(self) -> Counter[str]:
        return Counter(self.calls["runs"])


def point(api: httpx.Client, emulator: EmulatorCounters) -> Point:
    return Point(time.time(), time.monotonic(), apiserver_requests(api), emulator.fetch(runs=True))


def write_delta(a: Point, b: Point) -> dict[str, int]:
    """Writes to PaiPipelineRuns and Events between two points, by kind."""
    out: dict[str, int] = {}
    for (verb, resource, sub), count in b.writes.items():
        if verb in ("GET", "LIST", "WATCH", "CONNECT") or resource not in ("paipipelineruns", "events"):
            continue
        delta = count - a.writes.get((verb, resource, sub), 0)
        if delta:
            out[f"{verb} {resource}{'/' + sub if sub else ''}"] = delta
    return out


def call_delta(a: Point, b: Point) -> dict[str, int]:
    out = {"total": int(b.calls["total"]) - int(a.calls["total"])}
    for action, count in b.calls["actions"].items():
        out[action] = int(count) - int(a.calls["actions"].get(action, 0))
    throttled = int(b.calls["outcomes"].get("Throttling.User", 0)) - int(a.calls["outcomes"].get("Throttling.User", 0))
    out["throttled"] = throttled
    return out


def calls_for(a: Point, b: Point, run_ids: set[str]) -> int:
    before, after = a.per_run, b.per_run
    return sum(after[r] - before[r] for r in run_ids)


def status_writes(writes: dict[str, int]) -> int:
    return writes.get("PATCH paipipelineruns/status", 0) + writes.get("PUT paipipelineruns/status", 0)


def lags_for(
    watch: ResourceWatch, changes: list[tuple[BenchRun, float, str]], deadline: float
) -> tuple[list[float], int]:
    """Lag of each change: until the watch first showed the new runStatus. Changes not shown by `deadline`
    count with their lower bound (deadline - change), so a slow operator can only look worse, not better."""
    lags: list[float] = []
    late = 0
    for run, at, status in changes:
        seen = watch.first_seen.get((run.key, status))
        if seen is None or seen > deadline:
            late += 1
            lags.append(deadline - at)
        else:
            lags.append(max(0.0, seen - at))
    return lags, late


def run_variant(cfg: Config, n: int, variant: str) -> dict[str, Any]:
    workdir = cfg.workdir / f"n{n}-{variant}"
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"n": n, "operator": variant, "code": code_version()}
    with contextlib.ExitStack() as stack:
        log(f"N={n} {variant}: control plane, emulator, {n} resources")
        cp = start_cluster(stack)
        share = share_control_plane(cfg, cp, stack, result) if variant != NAIVE else None
        if variant != NAIVE and cfg.ceiling:
            # The limit beside us, on the same control plane, before the operator adds anything to it.
            log(f"N={n} {variant}: the API server's status-write ceiling with a lean client")
            throttled_before = share.throttling() if share else None
            with share.held() if share else contextlib.nullcontext():
                result["ceiling"] = ceiling.measure(cp, min(3000, max(1000, n)))
            if share and throttled_before:
                result["ceiling"]["control_plane_throttling"] = share.throttling().since(throttled_before)
            log(f"N={n} {variant}: ceiling {result['ceiling']}")
        # The baseline's kopf timers need a finalizer on every object, which the operator's RBAC does not
        # grant (it never writes metadata): the baseline runs as admin, the operator as its ServiceAccount.
        kubeconfig = (
            cp.service_account_kubeconfig("paiflow-system", "paiflow-operator", workdir / "sa.kubeconfig", 4 * 3600)
            if variant != NAIVE
            else cp.kubeconfig
        )
        # The baseline has no rate limit of its own; an unlimited PAI shows its best-case lag.
        limit = cfg.pai_qps_limit if variant != NAIVE else None
        emulator = EmulatorProcess(workdir, "emulator", {ACCESS_KEY_ID: ACCESS_KEY_SECRET}, cfg.latency, limit)
        stack.callback(emulator.stop)
        emulator.start()
        assert emulator.counters is not None
        counters = emulator.counters
        runs = population(n, time.time())
        by_key = {run.key: run for run in runs}
        emulator.add_runs(runs)
        watch = ResourceWatch(cp.workdir, cp.server)
        stack.callback(watch.stop)
        watch.start()
        wait_until(lambda: bool(watch.resource_version), 30, "the watch")
        result["create_seconds"] = round(create_resources(cp, runs), 1)
        wait_until(lambda: len(watch.status) >= n, 120, "the watch to show every resource")
        if variant == SCAN:
            result["workspaces"] = create_workspaces(cp, runs, 0)
        extra_env = scan_env(cfg) if variant == SCAN else None
        api = kube_client(cp.workdir, cp.server)
        stack.callback(api.close)
        emulator.start_sampling()

        # -- 2. initial sync
        start = point(api, counters)
        cp_cpu_start, emulator_cpu_start = control_plane_cpu_seconds(cp), _cpu_of(emulator.child.pid)
        bench_cpu_start = time.process_time()
        operator = start_operator(variant, cfg, kubeconfig, emulator.url, workdir / f"{variant}.log", extra_env)
        stack.callback(operator.child.stop)
        sampler = ProcSampler(operator.child.pid)
        sampler.start()
        stack.callback(sampler.stop)
        log(f"N={n} {variant}: operator up, waiting for the first status of every run")
        # The baseline has no rate limit to wait for; past 5 minutes it is not keeping up, which is a result.
        timeout = max(300.0, 3 * n / cfg.qps + 120) if variant != NAIVE else 300.0
        complete = True
        try:
            wait_until(lambda: watch.count_with_status() >= n, timeout, "every first status", operator.child.alive)
        except TimeoutError as exc:
            # An operator that cannot keep up is a result, not a failure: measure what it does anyway.
            log(f"N={n} {variant}: {exc}; {watch.count_with_status()} of {n} have a status")
            complete = False
        synced = point(api, counters)
        initial_calls = call_delta(start, synced)
        result["initial"] = {
            "complete": complete,
            "with_status": watch.count_with_status(),
            "seconds": round(synced.epoch - start.epoch, 1),
            "calls": initial_calls,
            "writes": write_delta(start, synced),
            "max_calls_in_1s": counters.max_in_one_second(start.epoch, synced.epoch),
            **cpu_and_rss(sampler.window(start.mono, synced.mono)),
        }
        span = max(synced.mono - start.mono, 1e-9)
        result["initial"].update(
            # The cores the rest of the machine used meanwhile: the first sync runs without a quota.
            control_plane_cpu_mean=round((control_plane_cpu_seconds(cp) - cp_cpu_start) / span, 3),
            emulator_cpu_mean=round((_cpu_of(emulator.child.pid) - emulator_cpu_start) / span, 3),
            bench_cpu_mean=round((time.process_time() - bench_cpu_start) / span, 3),
        )
        log(f"N={n} {variant}: initial sync {result['initial']['seconds']}s, {initial_calls['total']} PAI calls")
        operator.trace("1-first-sync")

        # -- 3. steady state
        duration = cfg.duration if variant != NAIVE else cfg.naive_duration
        finished_at_start = {by_key[k].run_id for k, s in watch.snapshot().items() if s in TERMINAL}
        window_start = point(api, counters)
        cp_cpu_start = control_plane_cpu_seconds(cp)
        log(f"N={n} {variant}: steady state for {duration:.0f}s")
        while time.time() < window_start.epoch + duration:
            if not operator.child.alive():
                raise RuntimeError(f"{variant} died:\n{operator.child.log_tail()}")
            time.sleep(1)
        window_end = point(api, counters)
        cp_cpu = (control_plane_cpu_seconds(cp) - cp_cpu_start) / (window_end.mono - window_start.mono)
        result["steady"] = steady_summary(cfg, runs, watch, sampler, counters, window_start, window_end)
        result["steady"]["calls_for_finished_runs"] = calls_for(window_start, window_end, finished_at_start)
        result["steady"]["control_plane_cpu_mean"] = round(cp_cpu, 3)
        if variant != NAIVE:
            result["steady"]["operator_metrics"] = operator_counters(operator.metrics())
        operator.trace("2-steady")

        # -- 4. most active runs end at once
        before_finish = point(api, counters)
        cp_cpu_start, emulator_cpu_start = control_plane_cpu_seconds(cp), _cpu_of(emulator.child.pid)
        bench_cpu_start = time.process_time()  # this process: the benchmark's watch, sampler and bookkeeping
        throttled_before = share.throttling() if share else None
        with share.held() if share else contextlib.nullcontext():
            result["mass_finish"] = mass_finish(cfg, runs, by_key, watch, emulator, operator, n, variant)
        after_finish = point(api, counters)
        span = after_finish.mono - before_finish.mono
        if share and throttled_before:
            result["mass_finish"]["control_plane_throttling"] = share.throttling().since(throttled_before)
        result["mass_finish"].update(
            # Cores used meanwhile by etcd + kube-apiserver and by the emulator, beside the operator's own.
            control_plane_cpu_mean=round((control_plane_cpu_seconds(cp) - cp_cpu_start) / span, 3),
            emulator_cpu_mean=round((_cpu_of(emulator.child.pid) - emulator_cpu_start) / span, 3),
            bench_cpu_mean=round((time.process_time() - bench_cpu_start) / span, 3),
            calls=call_delta(before_finish, after_finish),
            writes=write_delta(before_finish, after_finish),
            **cpu_and_rss(sampler.window(before_finish.mono, after_finish.mono)),
        )
        operator.trace("3-mass-finish")
        burst = result["mass_finish"]
        if burst.get("status_seconds") and "ceiling" in result:
            # Our status writes per second against the lean client's ceiling: over the whole burst (its rows come
            # as each workspace's scan comes round, within one interval) and at its busiest 10 s.
            rate = burst["ended"] / burst["status_seconds"]
            ceiling_rate = result["ceiling"]["status_patches_per_second"]
            burst["status_writes_per_second"] = round(rate, 1)
            burst["mean_ceiling_ratio"] = round(rate / ceiling_rate, 3) if ceiling_rate else None
            burst["ceiling_ratio"] = round(burst["peak_10s_per_second"] / ceiling_rate, 3) if ceiling_rate else None
            burst["lag_goal_p99"] = round(cfg.interval + burst["ended"] / ceiling_rate, 1) if ceiling_rate else None

        # -- 5. restart with most runs finished
        result["restart"] = restart(
            cfg, variant, kubeconfig, emulator, counters, api, watch, by_key, operator, workdir, extra_env
        )
        final = counters.fetch(seconds=True)
        per_second = [v for k, v in (final.get("perSecond") or {}).items() if int(k) >= int(start.epoch)]
        result["rate_limit"] = {
            "pai_qps_limit": limit,
            "operator_qps": cfg.qps if variant != NAIVE else None,
            "throttled": int(final["outcomes"].get("Throttling.User", 0)),
            # Sampled every 0.1 s by the benchmark: an estimate; the per-second count below is exact.
            "max_calls_in_1s": counters.max_in_one_second(start.epoch, time.time()),
            "max_calls_in_a_second": max(per_second, default=None),
        }
        result["watch_error"] = watch.error
    log(f"N={n} {variant}: done")
    return result


def steady_summary(
    cfg: Config,
    runs: list[BenchRun],
    watch: ResourceWatch,
    sampler: ProcSampler,
    counters: EmulatorCounters,
    a: Point,
    b: Point,
) -> dict[str, Any]:
    span = b.epoch - a.epoch
    # Lag only for changes that had a full poll interval (and some) to show before the window closed.
    grace = cfg.interval + 10
    measured = changes_between(runs, a.epoch, b.epoch - grace)
    lags, late = lags_for(watch, measured, b.epoch)
    real_changes = len(changes_between(runs, a.epoch, b.epoch))
    events = watch.events_between(a.epoch, b.epoch)
    modified = [e for e in events if e.type == "MODIFIED"]
    status_changed = sum(1 for e in modified if e.status_changed)
    mid = (a.epoch + b.epoch) / 2
    active = sum(1 for run in runs if run.status_at(mid) not in TERMINAL)
    calls = call_delta(a, b)
    writes = write_delta(a, b)
    patches = status_writes(writes)
    per_interval = calls["total"] / span * cfg.interval
    gets = calls.get("GetPipelineRun", 0)
    return {
        "seconds": round(span, 1),
        "active_runs": active,
        "lag": lag_summary(lags, late),
        "real_changes": real_changes,
        "calls": calls,
        "calls_per_min": round(calls["total"] / span * 60, 1),
        "calls_per_interval": round(per_interval, 1),
        "calls_per_interval_per_active": round(per_interval / active, 4) if active else None,
        # GetPipelineRun calls beyond one per change: the periodic detail refresh (or plain polling).
        "gets_beyond_changes_per_interval": round(max(0, gets - status_changed) / span * cfg.interval, 1),
        "calls_per_change": round(calls["total"] / status_changed, 2) if status_changed else None,
        "max_calls_in_1s": counters.max_in_one_second(a.epoch, b.epoch),
        "writes": writes,
        "status_writes": patches,
        "status_writes_per_min": round(patches / span * 60, 1),
        "watch_modified": len(modified),
        "watch_status_changes": status_changed,
        "unchanged_writes": len(modified) - status_changed,
        "unchanged_write_fields": changed_fields(e for e in modified if not e.status_changed),
        "writes_per_change": round(patches / status_changed, 3) if status_changed else None,
        **cpu_and_rss(sampler.window(a.mono, b.mono)),
        "rss_peak_mib_lifetime": max((s.rss_mib for s in sampler.samples), default=None),
    }


def changed_fields(events: Iterable[WatchEvent]) -> dict[str, int]:
    """What writes that left runStatus alone changed: field name -> number of writes touching it."""
    tally: Counter[str] = Counter()
    for event in events:
        tally.update(event.fields or ("(nothing)",))
    return dict(tally.most_common(12))


def _cpu_of(pid: int | None) -> float:
    sample = read_proc(pid) if pid is not None else None
    return sample.cpu_seconds if sample is not None else 0.0


def control_plane_cpu_seconds(cp: ControlPlane) -> float:
    """CPU seconds used so far by etcd + kube-apiserver: what the writes cost the cluster, for context."""
    samples = [read_proc(pid) for pid in cp.pids.values()]
    return sum(s.cpu_seconds for s in samples if s is not None)


def operator_counters(text: str) -> dict[str, float]:
    """The operator's own view: PAI calls and Kubernetes writes it made (cross-check of the emulator)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("paiflow_pai_calls", "paiflow_kube_writes", "paiflow_tracked_resources", "paiflow_members"):
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                label = ",".join(f"{v}" for v in sample.labels.values())
                out[f"{sample.name}{{{label}}}" if label else sample.name] = sample.value
    return out


def mass_finish(
    cfg: Config,
    runs: list[BenchRun],
    by_key: dict[tuple[str, str], BenchRun],
    watch: ResourceWatch,
    emulator: EmulatorProcess,
    operator: Operator,
    n: int,
    variant: str,
) -> dict[str, Any]:
    """90% of the still-active runs end now; the restart then finds most resources finished."""
    rng = random.Random(n)
    # Active in Kubernetes and in PAI for a while yet: a run that PAI has just ended by its own script is
    # left alone (forcing it would not change its status, and its lag would be measured twice).
    soon = time.time() + 10
    active = [
        by_key[k]
        for k, s in watch.snapshot().items()
        if s not in TERMINAL and by_key[k].status_at(soon) not in TERMINAL
    ]
    chosen = [run for run in active if rng.random() < 0.9]
    ends = {run.run_id: ("Failed" if rng.random() < 0.15 else "Succeeded") for run in chosen}
    log(f"N={n} {variant}: {len(chosen)} of {len(active)} active runs end now")
    done = asyncio.run(emulator.transition_many([(r, [[end, None]]) for r, end in ends.items()]))
    forced_end = max(done.values(), default=time.time())
    # Thousands of transitions take the emulator a while (tens of seconds at 10,000): a run whose own script ended
    # it before its forced end took effect already shows that end, and a finished run is never polled again (PAI
    # never ends a run twice). It is no change of the burst.
    natural = [run for run in chosen if run.status_at(done[run.run_id] - 0.5) in TERMINAL]
    if natural:
        log(f"N={n} {variant}: {len(natural)} of them had ended by their own script before their forced end")
    chosen = [run for run in chosen if run not in natural]
    changes = [(run, done[run.run_id], ends[run.run_id]) for run in chosen]

    def all_seen() -> bool:
        return all((run.key, status) in watch.first_seen for run, _, status in changes)

    timeout = 3 * cfg.interval + 1.5 * len(chosen) / cfg.qps + 60
    try:
        wait_until(all_seen, timeout, "every ended run to show", operator.child.alive)
    except TimeoutError as exc:
        log(str(exc))
    lags, late = lags_for(watch, changes, time.time())
    # Which runs were not shown in time: their names, to look for in the operator's log.
    late_runs = [f"{r.key[0]}/{r.key[1]}" for r, _, status in changes if (r.key, status) not in watch.first_seen]
    if late_runs:
        log(f"N={n} {variant}: not shown in time: {', '.join(late_runs[:20])}")
    seen = [watch.first_seen.get((run.key, status), time.time()) for run, _, status in changes]
    first_seen = [watch.first_seen.get((run.key, status)) for run, _, status in changes]
    shown = sorted(s for s in first_seen if s is not None)
    return {
        "ended": len(chosen),
        "ended_by_script_first": len(natural),
        # How long the emulator took to apply every forced end (the burst is not quite "at once").
        "transitions_seconds": round(max(done.values(), default=0) - min(done.values(), default=0), 1),
        # From the first run ending in PAI to the last one showing in Kubernetes.
        "drain_seconds": round(max(seen, default=forced_end) - min(done.values(), default=forced_end), 1),
        # From the first ended run showing to the last: the time the status writes of the burst took.
        "status_seconds": round(shown[-1] - shown[0], 1) if len(shown) > 1 else None,
        # The most statuses shown in any 10 s: the write rate while writes, not the scans' schedule, set the pace.
        "peak_10s_per_second": round(_densest(shown, 10.0) / 10.0, 1),
        "lag": lag_summary(lags, late),
        "late_runs": late_runs[:100],
        # (seconds since the first end in PAI when it showed, its lag) of each change: lag against time.
        "lag_series": [
            [round(at + lag - min(done.values()), 2), round(lag, 2)]
            for (_, at, _), lag in zip(changes, lags, strict=True)
        ],
    }


def _densest(times: list[float], window: float) -> int:
    """The most of the sorted `times` within any `window` seconds."""
    best, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] > window:
            first += 1
        best = max(best, last - first + 1)
    return best


def restart(
    cfg: Config,
    variant: str,
    kubeconfig: Path,
    emulator: EmulatorProcess,
    counters: EmulatorCounters,
    api: httpx.Client,
    watch: ResourceWatch,
    by_key: dict[tuple[str, str], BenchRun],
    old: Operator,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    old.child.stop()
    statuses = watch.snapshot()
    finished = {by_key[k].run_id for k, s in statuses.items() if s in TERMINAL}
    active = {by_key[k].run_id for k, s in statuses.items() if s not in TERMINAL}
    before = point(api, counters)
    base = before.per_run
    started = time.monotonic()
    operator = start_operator(variant, cfg, kubeconfig, emulator.url, workdir / f"{variant}-restart.log", extra_env)
    healthy = time.monotonic() - started
    sampler = ProcSampler(operator.child.pid)
    sampler.start()
    try:
        # Steady when every active run has been asked about once since the restart.
        steady_after: float | None = None
        deadline = started + max(cfg.restart_window, 1.5 * len(active) / cfg.qps + cfg.interval + 30)
        while time.monotonic() < deadline:
            if not operator.child.alive():
                raise RuntimeError(f"{variant} died after restart:\n{operator.child.log_tail()}")
            now_runs = counters.per_run()
            if steady_after is None and all(now_runs[r] > base[r] for r in active):
                steady_after = time.monotonic() - started
            if steady_after is not None and time.monotonic() - started >= cfg.restart_window:
                break
            time.sleep(1)
        operator.trace("4-restart")
        after = point(api, counters)
        span = after.mono - started
        restart_events = [e for e in watch.events_between(before.epoch, after.epoch) if e.type == "MODIFIED"]
        calls = call_delta(before, after)
        writes = write_delta(before, after)
        return {
            "resources": len(statuses),
            "finished": len(finished),
            "active": len(active),
            "seconds_observed": round(span, 1),
            "healthy_seconds": round(healthy, 1),
            "steady_seconds": round(steady_after, 1) if steady_after is not None else None,
            "calls": calls,
            "calls_for_finished_runs": calls_for(before, after, finished),
            "calls_for_active_runs": calls_for(before, after, active),
            "writes": writes,
            "status_writes": status_writes(writes),
            "write_fields": changed_fields(restart_events),
            **cpu_and_rss(sampler.samples),
        }
    finally:
        sampler.stop()
        operator.child.stop()


# ---- import of a whole workspace (issue 12) --------------------------------------------------------------


def run_import(cfg: Config, n: int) -> dict[str, Any]:
    """N PAI runs nobody wrote a resource for, in 20 workspaces; one PaiWorkspace each imports them.

    Measured: time until every run exists as a PaiPipelineRun with a status, API server writes per run
    (creates and status patches, Events apart), PAI calls, the operator's RSS."""
    workdir = cfg.workdir / f"import-n{n}"
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        log(f"import: N={n} PAI runs, no resources; PaiWorkspaces import them")
        cp = start_cluster(stack)
        kubeconfig = cp.service_account_kubeconfig(
            "paiflow-system", "paiflow-operator", workdir / "sa.kubeconfig", 4 * 3600
        )
        emulator = EmulatorProcess(
            workdir, "emulator", {ACCESS_KEY_ID: ACCESS_KEY_SECRET}, cfg.latency, cfg.pai_qps_limit
        )
        stack.callback(emulator.stop)
        emulator.start()
        assert emulator.counters is not None
        counters = emulator.counters
        runs = population(n, time.time())
        emulator.add_runs(runs)
        watch = ResourceWatch(cp.workdir, cp.server)
        stack.callback(watch.stop)
        watch.start()
        wait_until(lambda: bool(watch.resource_version), 30, "the watch")
        api = kube_client(cp.workdir, cp.server)
        stack.callback(api.close)
        workspaces = create_workspaces(cp, runs, n)
        start = point(api, counters)
        operator = start_operator(OURS, cfg, kubeconfig, emulator.url, workdir / "operator.log", scan_env(cfg))
        stack.callback(operator.child.stop)
        sampler = ProcSampler(operator.child.pid)
        sampler.start()
        stack.callback(sampler.stop)
        complete = True
        try:
            wait_until(lambda: watch.count_with_status() >= n, 1800, "every run imported", operator.child.alive)
        except TimeoutError as exc:
            log(str(exc))
            complete = False
        done = point(api, counters)
        writes = write_delta(start, done)
        created = writes.get("POST paipipelineruns", 0)
        patched = status_writes(writes)
        return {
            "n": n,
            "workspaces": workspaces,
            "complete": complete,
            "imported_with_status": watch.count_with_status(),
            "seconds": round(done.epoch - start.epoch, 1),
            "calls": call_delta(start, done),
            "writes": writes,
            "writes_per_run": round((created + patched) / n, 3) if n else None,
            "events_per_run": round(writes.get("POST events", 0) / n, 3) if n else None,
            **cpu_and_rss(sampler.samples),
        }


# ---- shards -----------------------------------------------------------------------------------------


SHARD_REPLICAS = 3


def run_shards(cfg: Config, n: int) -> dict[str, Any]:
    """Three replicas sharing the runs through Leases (shipped lease settings), against one control plane.
    Each replica talks to its own emulator (same runs, its own access key), so the emulators' per-run counters
    say exactly which replica polled which run. Then one replica is SIGKILLed: how long until the survivors
    poll each of its runs (bound: lease duration + one poll interval)."""
    workdir = cfg.workdir / f"shards-n{n}"
    workdir.mkdir(parents=True, exist_ok=True)
    replicas = SHARD_REPLICAS
    identities = [f"bench-replica-{i}" for i in range(replicas)]
    with contextlib.ExitStack() as stack:
        log(f"shards: N={n}, {replicas} replicas sharing runs through Leases")
        cp = start_cluster(stack)
        kubeconfig = cp.service_account_kubeconfig(
            "paiflow-system", "paiflow-operator", workdir / "sa.kubeconfig", 4 * 3600
        )
        runs = population(n, time.time())
        keys = [(f"LTAI5tBenchShard{i}0000", f"bench-shard-secret-{i}") for i in range(replicas)]
        emulators = []
        for i, (ak, secret) in enumerate(keys):
            emulator = EmulatorProcess(workdir, f"emulator-{i}", {ak: secret}, cfg.latency, cfg.pai_qps_limit)
            stack.callback(emulator.stop)
            emulators.append(emulator.start())
            emulator.add_runs(runs)
        watch = ResourceWatch(cp.workdir, cp.server)
        stack.callback(watch.stop)
        watch.start()
        wait_until(lambda: bool(watch.resource_version), 30, "the watch")
        create_resources(cp, runs)
        wait_until(lambda: len(watch.status) >= n, 120, "the watch to show every resource")
        operators = []
        for i, emulator in enumerate(emulators):
            env = {"PAIFLOW_POD_NAME": identities[i]}
            operator = start_operator(OURS, cfg, kubeconfig, emulator.url, workdir / f"replica-{i}.log", env, keys[i])
            stack.callback(operator.child.stop)
            operators.append(operator)
        alive = lambda: all(o.child.alive() for o in operators)  # noqa: E731

        def members(o: Operator) -> float:
            return operator_counters(o.metrics()).get("paiflow_members", -1.0)

        wait_until(lambda: all(members(o) == replicas for o in operators), 120, "every replica to see the others")
        synced = wait_until(lambda: watch.count_with_status() >= n, 3 * n / cfg.qps + 120, "first status", alive)
        # Counted from here: two more intervals, so every active run has been polled again by its owner.
        before = [e.counters.per_run() if e.counters else Counter[str]() for e in emulators]
        time.sleep(2 * cfg.interval + 5)
        per_replica = [
            (e.counters.per_run() if e.counters else Counter[str]()) - before[i] for i, e in enumerate(emulators)
        ]
        tracked = [operator_counters(o.metrics()).get("paiflow_tracked_resources", -1.0) for o in operators]
        uid_of = {by.run_id: watch.uids.get(by.key, "") for by in runs}
        owner_of = {rid: identities.index(rendezvous_owner(uid, identities) or "") for rid, uid in uid_of.items()}
        active = {r.run_id for r in runs if watch.status.get(r.key) not in TERMINAL}
        by_count: Counter[int] = Counter()
        wrong_owner = 0
        for run in runs:
            pollers = [i for i in range(replicas) if per_replica[i][run.run_id] > 0]
            if run.run_id in active:
                by_count[len(pollers)] += 1
            if pollers and pollers != [owner_of[run.run_id]]:
                wrong_owner += 1
        takeover = _kill_and_time_takeover(cfg, operators, emulators, owner_of, active, victim=replicas - 1)
        return {
            "n": n,
            "replicas": replicas,
            "active_runs": len(active),
            "seconds_to_first_status": round(synced, 1),
            "runs_polled_by_one_replica": by_count[1],
            "runs_polled_by_two_replicas": sum(v for k, v in by_count.items() if k > 1),
            "runs_polled_by_none": by_count[0],
            "runs_not_polled_by_their_hash_owner": wrong_owner,
            "runs_per_replica": [sum(1 for r in runs if per_replica[i][r.run_id] > 0) for i in range(replicas)],
            "tracked_resources_per_replica": tracked,
            "calls_per_replica": [sum(per_replica[i].values()) for i in range(replicas)],
            "all_statuses_shown": watch.count_with_status() >= n,
            **takeover,
        }


def _kill_and_time_takeover(
    cfg: Config,
    operators: list[Operator],
    emulators: list[EmulatorProcess],
    owner_of: dict[str, int],
    active: set[str],
    victim: int,
) -> dict[str, Any]:
    """SIGKILL one replica; seconds until a survivor first polls each of its active runs."""
    victims = {rid for rid, owner in owner_of.items() if owner == victim and rid in active}
    survivors = [i for i in range(len(operators)) if i != victim]
    counters = [e.counters for e in emulators]

    def per_run(i: int) -> Counter[str]:
        sampler = counters[i]
        return sampler.per_run() if sampler is not None else Counter()

    before = {i: per_run(i) for i in survivors}
    process = operators[victim].child.process
    assert process is not None
    os.killpg(process.pid, signal.SIGKILL)
    killed = time.monotonic()
    taken: dict[str, float] = {}
    deadline = killed + 3 * (LEASE_SECONDS + cfg.interval)
    while len(taken) < len(victims) and time.monotonic() < deadline:
        now = time.monotonic()
        for i in survivors:
            counts = per_run(i)
            for rid in victims:
                if rid not in taken and counts[rid] > before[i][rid]:
                    taken[rid] = now - killed
        time.sleep(0.5)
    seconds = sorted(taken.values())
    return {
        "killed_replica_active_runs": len(victims),
        "taken_over": len(taken),
        "takeover_seconds_max": round(seconds[-1], 1) if seconds else None,
        "takeover_seconds_median": round(seconds[len(seconds) // 2], 1) if seconds else None,
        "takeover_bound_seconds": LEASE_SECONDS + cfg.interval,
    }


# ---- the rate limit when N resources appear at once ----------------------------------------------------


def run_rate_limit(cfg: Config, n: int) -> dict[str, Any]:
    """The operator at its shipped rate limit (PAIFLOW_QPS 10, burst 20) while N resources appear at once.
    The emulator counts every call by the second it arrived in, so the limit is checked on the wire, not in
    the operator's own bookkeeping: a token bucket lets through at most burst + qps calls in any second.
    PAI's quota is set at twice the operator's limit, so that throttling never feeds back into the pacing
    being measured (throttles are still counted)."""
    workdir = cfg.workdir / f"rate-limit-n{n}"
    workdir.mkdir(parents=True, exist_ok=True)
    qps, burst = 10.0, 20
    quota, quota_burst = 2 * qps, 2 * burst
    with contextlib.ExitStack() as stack:
        log(f"rate limit: N={n} appear at once, PAIFLOW_QPS={qps:g}, PAI quota {quota:g} qps")
        cp = start_cluster(stack)
        kubeconfig = cp.service_account_kubeconfig(
            "paiflow-system", "paiflow-operator", workdir / "sa.kubeconfig", 4 * 3600
        )
        emulator = EmulatorProcess(
            workdir, "emulator", {ACCESS_KEY_ID: ACCESS_KEY_SECRET}, cfg.latency, quota, quota_burst
        )
        stack.callback(emulator.stop)
        emulator.start()
        assert emulator.counters is not None
        runs = population(n, time.time())
        emulator.add_runs(runs)
        create_resources(cp, runs)
        env = {"PAIFLOW_QPS": f"{qps:g}", "PAIFLOW_BURST": str(burst)}
        started = time.time()
        operator = start_operator(OURS, cfg, kubeconfig, emulator.url, workdir / "operator.log", env)
        stack.callback(operator.child.stop)
        time.sleep(cfg.rate_limit_seconds)
        data = emulator.counters.fetch(seconds=True)
        ended = time.time()
        per_second = {int(k): v for k, v in data["perSecond"].items() if int(started) <= int(k) < int(ended)}
        busy = [v for k, v in sorted(per_second.items())]
        # A token bucket allows `burst` at once and `qps` per second after: that bounds any one second.
        bound = burst + qps
        return {
            "n": n,
            "operator_qps": qps,
            "operator_burst": burst,
            "pai_quota_qps": quota,
            "seconds": round(ended - started, 1),
            "calls": int(data["total"]),
            "throttled": int(data["outcomes"].get("Throttling.User", 0)),
            "max_calls_in_a_second": max(busy, default=0),
            "seconds_over_qps_plus_burst": sum(1 for v in busy if v > bound),
            "seconds_over_qps_after_first_5s": sum(1 for v in busy[5:] if v > qps),
            "mean_qps": round(sum(busy) / max(1, len(busy)), 2),
            "projected_first_sync_seconds": round(n / qps, 0),
        }


# ---- main -------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    import kopf

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kopf": getattr(kopf, "__version__", "?"),
        "kubernetes": K8S_VERSION,
    }


def code_version() -> str:
    """The commit measured, marked dirty when operator/ has uncommitted changes (others edit it meanwhile)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "operator/paiflow_operator", "crds", "deploy")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def _sigterm(signum: int, frame: FrameType | None) -> None:
    # As for Ctrl-C: unwind through every `with`/finally so each child and control plane is stopped.
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=None, help="comma-separated N (default 100,1000,10000)")
    parser.add_argument(
        "--variants",
        default=None,
        help="ours,naive (default both). Given: the results join the existing bench/results/bench.json",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=330,
        help="steady-state seconds per N for the operator (default 330: one detail refresh of every run)",
    )
    parser.add_argument("--naive-duration", type=float, default=None, help="default: 4 intervals")
    parser.add_argument("--interval", type=float, default=30, help="PAIFLOW_DEFAULT_POLL_INTERVAL seconds")
    parser.add_argument("--qps", type=float, default=50, help="PAIFLOW_QPS (shipped default 10; see README)")
    parser.add_argument("--pai-qps-limit", type=float, default=60, help="the emulator's QPS limit (PAI's quota)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the emulator adds to each answer")
    parser.add_argument("--no-naive", action="store_true", help="skip the baseline")
    parser.add_argument("--shards", type=int, default=None, metavar="N", help="the shard check with N runs")
    parser.add_argument("--rate-limit", type=int, default=None, metavar="N", help="the rate-limit check, N runs")
    parser.add_argument("--no-shards", action="store_true", help="skip the shard check after the sizes")
    parser.add_argument("--no-rate-limit", action="store_true", help="skip the rate-limit check after the sizes")
    parser.add_argument("--rate-limit-seconds", type=float, default=90)
    parser.add_argument("--restart-window", type=float, default=None, help="default: 2 intervals")
    parser.add_argument(
        "--import", dest="import_n", type=int, default=None, metavar="N", help="the workspace import check, N runs"
    )
    parser.add_argument("--no-import", action="store_true", help="skip the workspace import check after the sizes")
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip measuring the API server's status-write ceiling first"
    )
    parser.add_argument(
        "--control-plane-cpus",
        type=float,
        default=1.5,
        help="CPU quota in cores for the control plane while the ceiling and the mass finish are measured,"
        " as if it had nodes of its own"
        " (default 1.5; 0: none; needs root and a writable cgroup tree, else runs without)",
    )
    parser.add_argument(
        "--trace-memory", action="store_true", help="run the operator under tracemalloc (memory only; slower)"
    )
    parser.add_argument(
        "--set",
        dest="operator_env",
        action="append",
        default=[],
        metavar="PAIFLOW_X=V",
        help="a setting for the operator under test (repeatable), e.g. --set PAIFLOW_KUBE_CONCURRENCY=32",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="logs (default: a temporary directory)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where bench.json/.md/.png go")
    args = parser.parse_args(argv)
    # --shards / --rate-limit without --sizes run just that check; with --variants or without --sizes the
    # results join the existing bench/results/bench.json instead of starting it afresh.
    only = (args.shards is not None or args.rate_limit is not None or args.import_n is not None) and args.sizes is None
    sizes = () if only else tuple(int(s) for s in (args.sizes or "100,1000,10000").split(",") if s.strip())
    explicit = args.shards is not None or args.rate_limit is not None or args.import_n is not None
    import_n = (args.import_n or 0) if explicit else (0 if args.no_import else max(sizes, default=0))
    shards = (args.shards or 0) if explicit else (0 if args.no_shards else 1000)
    rate_limit = (args.rate_limit or 0) if explicit else (0 if args.no_rate_limit else max(sizes, default=0))
    variants = tuple(v.strip() for v in (args.variants or f"{OURS},{SCAN},{NAIVE}").split(",") if v.strip())
    if args.no_naive:
        variants = tuple(v for v in variants if v != NAIVE)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="paiflow-bench-"))
    return Config(
        sizes=sizes,
        duration=args.duration,
        naive_duration=args.naive_duration or 4 * args.interval,
        interval=args.interval,
        qps=args.qps,
        pai_qps_limit=args.pai_qps_limit,
        latency=args.latency,
        variants=variants,
        merge=only or args.variants is not None,
        shards=shards,
        rate_limit=rate_limit,
        import_n=import_n,
        ceiling=not args.no_ceiling,
        trace_memory=args.trace_memory,
        control_plane_cpus=args.control_plane_cpus,
        operator_env=tuple(_setting(item) for item in args.operator_env),
        rate_limit_seconds=args.rate_limit_seconds,
        restart_window=args.restart_window or 2 * args.interval,
        workdir=workdir.resolve(),
        results=args.results.resolve(),
    )


def _setting(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name.startswith("PAIFLOW_"):
        raise SystemExit(f"--set wants PAIFLOW_NAME=VALUE, got {item!r}")
    return name, value


def results_for(cfg: Config) -> Iterator[tuple[int, str]]:
    for n in cfg.sizes:
        for variant in (OURS, SCAN, NAIVE):
            if variant in cfg.variants:
                yield n, variant


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    cfg.results.mkdir(parents=True, exist_ok=True)
    out_json = cfg.results / "bench.json"
    log(f"logs in {cfg.workdir}")
    doc: dict[str, Any] = {"sizes": {}}
    if cfg.merge and out_json.exists():
        doc = json.loads(out_json.read_text())  # a partial run joins the last full run's results
    doc.update(machine=machine())
    if not cfg.merge or "config" not in doc:
        doc["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        doc["config"] = {k: v for k, v in asdict(cfg).items() if k not in ("workdir", "merge", "results")}

    def save() -> None:
        # After every step: an interrupted run still leaves what it measured.
        out_json.write_text(json.dumps(doc, indent=2) + "\n")

    try:
        for n, variant in results_for(cfg):
            doc["sizes"].setdefault(str(n), {})[variant] = run_variant(cfg, n, variant)
            entry = doc["sizes"][str(n)]
            if OURS in entry and NAIVE in entry:
                entry["ratios"] = report.ratios(entry[OURS], entry[NAIVE])
            save()
        if cfg.shards:
            doc["shards"] = run_shards(cfg, cfg.shards)
            save()
        if cfg.rate_limit:
            doc["rate_limit"] = run_rate_limit(cfg, cfg.rate_limit)
            save()
        if cfg.import_n:
            doc["import"] = run_import(cfg, cfg.import_n)
            save()
    except KeyboardInterrupt:
        log("interrupted: everything started has been stopped")
        return 130
    finally:
        doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        save()
    if doc["sizes"]:
        print(report.write(doc, cfg.results))
    else:
        print(json.dumps({k: doc.get(k) for k in ("shards", "rate_limit", "import")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

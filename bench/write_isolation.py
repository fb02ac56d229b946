"""Write isolation: other objects' status write latency while one object's status writes are refused.

    python -m bench.write_isolation --objects 20 --seconds 10

On the real kube-apiserver the repository builds, a ValidatingAdmissionPolicy refuses (403) every status write of
one PaiPipelineRun, "frozen", while the others' statuses are written through the operator's KubeApi and write gate
as fast as they come back (a pause of `--pause` between two writes of one object). Three phases in one run:
nothing refused (the baseline), "frozen" refused with this write gate, and "frozen" refused with the gate as it
was before (a copy below: it made the failing object its only prober, and every other write waited). Prints and
saves (bench/results/write_isolation.json) the other objects' write latency (median, p99, worst; a write still
waiting at the end counts with its age) and writes done, for each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import kubernetes
from tests.support.controlplane import ControlPlane

from bench.run import RESULTS, log
from paiflow_operator.api.runs import API_VERSION, KIND, PLURAL
from paiflow_operator.guards.write_gate import WriteGate
from paiflow_operator.kube import KubeApi, KubeError

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "write-isolation"
FROZEN = "frozen"
T = TypeVar("T")

POLICY = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingAdmissionPolicy",
    "metadata": {"name": "freeze-one-status"},
    "spec": {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": ["paiflow-operator.dev"],
                    "apiVersions": ["*"],
                    "operations": ["UPDATE"],
                    "resources": ["paipipelineruns/status"],
                }
            ]
        },
        "validations": [
            {
                "expression": f"object.metadata.name != '{FROZEN}'",
                "message": "status writes of this run are frozen by the platform team",
                "reason": "Forbidden",
            }
        ],
    },
}
BINDING = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingAdmissionPolicyBinding",
    "metadata": {"name": "freeze-one-status"},
    "spec": {"policyName": "freeze-one-status", "validationActions": ["Deny"]},
}


def _transient_before(exc: BaseException) -> bool:
    if isinstance(exc, KubeError):
        return exc.status in {0, 403, 408, 429, 500, 502, 503, 504}
    return isinstance(exc, Exception)


class LegacyWriteGate:
    """The write gate before issue 17 (5b1410e), kept here to measure against: the first writer that failed
    with a "transient" error (403 included) closed the gate and probed alone while every other write waited."""

    def __init__(self, base: float = 0.5, cap: float = 4.0) -> None:
        self._base, self._cap, self._delay = base, cap, base
        self._open = asyncio.Event()
        self._open.set()
        self._probing = False

    async def write(self, attempt: Callable[[], Awaitable[T]], who: object = None) -> T:
        while True:
            if not self._open.is_set():
                if self._probing:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._open.wait(), self._cap)
                    continue
                self._probing = True
                try:
                    await asyncio.sleep(self._delay)
                    self._delay = min(self._delay * 2, self._cap)
                    try:
                        result = await attempt()
                    except Exception as exc:
                        if _transient_before(exc):
                            continue
                        raise
                    self._delay = self._base
                    self._open.set()
                    return result
                finally:
                    self._probing = False
            try:
                return await attempt()
            except Exception as exc:
                if not _transient_before(exc):
                    raise
                self._open.clear()


class Gate(Protocol):
    async def write(self, attempt: Callable[[], Awaitable[Any]], who: object = None) -> Any: ...


async def _phase(kube: KubeApi, gate: Gate | None, objects: int, seconds: float, pause: float) -> dict[str, Any]:
    """Every object writes its status in a loop for `seconds`; "frozen" too unless gate is None (baseline)."""
    latencies: list[float] = []
    pending: dict[str, float] = {}
    refusals = 0
    refusal_text = ""
    stop = time.monotonic() + seconds
    use: Gate = gate or WriteGate()

    async def writer(name: str) -> None:
        nonlocal refusals, refusal_text
        n = 0
        while time.monotonic() < stop:
            n += 1
            patch = {"message": f"write {n}"}
            started = time.monotonic()
            pending[name] = started
            try:
                await use.write(functools.partial(kube.patch_status, NAMESPACE, name, patch), name)
            except KubeError as exc:
                refusals += 1
                refusal_text = refusal_text or f"{exc.status} {exc.message}"[:200]
                await asyncio.sleep(pause * 5)  # the object's own retry with backoff
                continue
            finally:
                pending.pop(name, None)
            if name != FROZEN:
                latencies.append(time.monotonic() - started)
            await asyncio.sleep(pause)

    names = [f"run-{i:03d}" for i in range(objects)] + ([FROZEN] if gate is not None else [])
    tasks = [asyncio.create_task(writer(name)) for name in names]
    await asyncio.sleep(seconds)
    # Writes still waiting count with their age: a write held for ever must not vanish from the figure.
    now = time.monotonic()
    waiting = [now - t for name, t in pending.items() if name != FROZEN]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    every = sorted(latencies + waiting)
    return {
        "writes_done": len(latencies),
        "writes_still_waiting": len(waiting),
        "median_ms": round(statistics.median(every) * 1000, 1) if every else None,
        "p99_ms": round(every[int(len(every) * 0.99) - 1] * 1000, 1) if every else None,
        "worst_ms": round(every[-1] * 1000, 1) if every else None,
        "frozen_refusals": refusals,
        "refusal": refusal_text,
        "gate_closed": getattr(use, "closed_count", None),
    }


async def _measure(kubeconfig: Path, objects: int, seconds: float, pause: float) -> dict[str, Any]:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    kube = KubeApi(configuration, concurrency=8)
    try:
        results: dict[str, Any] = {}
        for name, gate in (("baseline", None), ("this_gate", WriteGate()), ("gate_before", LegacyWriteGate())):
            log(f"write isolation: {name}")
            results[name] = await _phase(kube, gate, objects, seconds, pause)
        return results
    finally:
        await kube.aclose()


def run_write_isolation(objects: int, seconds: float, pause: float) -> dict[str, Any]:
    with ControlPlane() as cp:
        cp.kubectl("apply", "-f", str(REPO / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        runs = [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"pipelineRunId": f"flow-{name}"},
            }
            for name in [f"run-{i:03d}" for i in range(objects)] + [FROZEN]
        ]
        items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}, *runs, POLICY, BINDING]
        cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        # The policy takes a moment to be enforced: wait until "frozen" is refused.
        kubeconfig = cp.kubeconfig
        deadline = time.monotonic() + 30
        while True:
            try:
                cp.kubectl(
                    "patch", PLURAL, FROZEN, "-n", NAMESPACE, "--subresource=status", "--type=merge",
                    "-p", '{"status": {"message": "probe"}}',
                )  # fmt: skip
            except Exception as exc:
                if "frozen" in str(exc):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the ValidatingAdmissionPolicy never refused the frozen run's status")
            time.sleep(0.5)
        results = asyncio.run(_measure(kubeconfig, objects, seconds, pause))
        return {"objects": objects, "seconds": seconds, "pause_s": pause, **results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.write_isolation", description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pause", type=float, default=0.2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run_write_isolation(args.objects, args.seconds, args.pause)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "write_isolation.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

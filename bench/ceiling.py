"""The API server's own ceiling for status writes on this machine, measured with a lean client.

A mass finish is judged against what the control plane can take, measured in the same run before the operator
starts: N PaiPipelineRuns in a scratch namespace, each status patched once (as a mass finish patches each run
once), with `in_flight` requests at a time over one HTTP/1.1 connection pool and no response decoding; then the
same with an Event created after each patch, as the operator did inline before statuses went first.

    python -m bench.ceiling --n 3000          # on its own control plane
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tests.support.controlplane import ControlPlane

from bench.observe import RESOURCE_PATH, kube_async_client

NAMESPACE = "bench-ceiling"
GROUP_PATH = RESOURCE_PATH.rsplit("/", 1)[0]


def _run(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiPipelineRun",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"pipelineRunId": f"flow-{name}", "suspend": True},
    }


def _status(i: int, phase: str) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "status": {
            "runStatus": phase,
            "message": f"run {i} is {phase}",
            "finishedAt": now,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": phase, "message": "", "lastTransitionTime": now},
                {"type": "Succeeded", "status": "True", "reason": phase, "message": "", "lastTransitionTime": now},
            ],
        }
    }


def _event(i: int, name: str, uid: str) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": NAMESPACE},
        "involvedObject": {
            "apiVersion": "paiflow-operator.dev/v1alpha1",
            "kind": "PaiPipelineRun",
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid,
        },
        "reason": "Succeeded",
        "message": f"run {i} Succeeded",
        "type": "Normal",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": "bench-ceiling"},
    }


async def _pool(n: int, in_flight: int, one: Any) -> float:
    limit = asyncio.Semaphore(in_flight)

    async def guarded(i: int) -> None:
        async with limit:
            for attempt in range(6):
                try:
                    await one(i)
                    return
                except (httpx.TransportError, httpx.HTTPStatusError):
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise RuntimeError(f"request {i} kept failing")

    started = time.monotonic()
    await asyncio.gather(*(guarded(i) for i in range(n)))
    return time.monotonic() - started


async def _measure(cp: ControlPlane, n: int, in_flight: int) -> dict[str, float]:
    runs = f"{GROUP_PATH}/namespaces/{NAMESPACE}/paipipelineruns"
    events = f"/api/v1/namespaces/{NAMESPACE}/events"
    merge = {"Content-Type": "application/merge-patch+json"}
    uids: dict[int, str] = {}
    async with kube_async_client(cp.workdir, cp.server) as client:
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        response = await client.post("/api/v1/namespaces", json=ns)
        if response.status_code not in (201, 409):
            response.raise_for_status()

        async def create(i: int) -> None:
            r = await client.post(runs, json=_run(f"c{i}"))
            if r.status_code == 409:
                r = await client.get(f"{runs}/c{i}")
            r.raise_for_status()
            uids[i] = json.loads(r.content)["metadata"]["uid"]

        async def patch(i: int) -> None:
            body = json.dumps(_status(i, "Succeeded")).encode()
            (await client.patch(f"{runs}/c{i}/status", content=body, headers=merge)).raise_for_status()

        async def patch_and_event(i: int) -> None:
            body = json.dumps(_status(i, "Failed")).encode()
            (await client.patch(f"{runs}/c{i}/status", content=body, headers=merge)).raise_for_status()
            (await client.post(events, json=_event(i, f"c{i}", uids[i]))).raise_for_status()

        create_s = await _pool(n, in_flight, create)
        patch_s = await _pool(n, in_flight, patch)
        both_s = await _pool(n, in_flight, patch_and_event)
        # Gone before the benchmark's own watch lists runs: it must see only the population's.
        with contextlib.suppress(httpx.HTTPError):
            await client.delete(f"/api/v1/namespaces/{NAMESPACE}")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if (await client.get(f"/api/v1/namespaces/{NAMESPACE}")).status_code == 404:
                break
            await asyncio.sleep(0.5)
        else:
            raise RuntimeError(f"namespace {NAMESPACE} was not deleted within 300 s")
    return {
        "n": n,
        "in_flight": in_flight,
        "creates_per_second": round(n / create_s, 1),
        "status_patches_per_second": round(n / patch_s, 1),
        "patch_and_event_per_second": round(n / both_s, 1),
    }


def measure(cp: ControlPlane, n: int = 3000, in_flight: int = 16) -> dict[str, float]:
    """Creates, status patches and patch+Event pairs per second the API server takes from a lean client."""
    return asyncio.run(_measure(cp, n, in_flight))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        cp = ControlPlane()
        stack.callback(cp.stop)
        cp.start()
        cp.kubectl("apply", "-f", str(Path(__file__).resolve().parents[1] / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd/paipipelineruns.paiflow-operator.dev", "--timeout=60s")
        print(json.dumps(measure(cp, args.n, args.in_flight), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

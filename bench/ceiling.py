"""The API server's own ceiling for status writes on this machine, measured with a lean client.

A mass finish is judged against what the control plane can take, measured in the same run before the operator
starts: N PaiPipelineRuns in a scratch namespace, each given its first status, then each status patched once with
the end of its run (as a mass finish patches each run once), with `in_flight` requests at a time over one HTTP/1.1
connection pool and no response decoding; then the same with an Event created after each patch, as the operator
did inline before statuses went first. The patches are the operator's own (runs/reconcile.py on rows like the
emulator's), computed before the clock starts, and one watcher reads every change meanwhile, as the benchmark's
own watch does during a mass finish.

The lean client is aiohttp: on this machine httpx spent 3-5 ms of CPU per patch, aiohttp 0.5-0.7 ms, and the
client shares the two cores with the API server, so a costly client would understate the ceiling. The
operator's own client (kube.KubeApi as it ships) is measured on the same runs for comparison.

    python -m bench.ceiling --n 3000          # on its own control plane
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
from tests.support.controlplane import ControlPlane

from bench.observe import RESOURCE_PATH, admin_tls
from bench.procs import read_proc
from paiflow_operator.api.runs import PaiPipelineRunSpec
from paiflow_operator.kube import KubeApi
from paiflow_operator.pai.models import PipelineRun
from paiflow_operator.runs.reconcile import reconcile
from paiflow_operator.settings import Settings

NAMESPACE = "bench-ceiling"
MERGE = "application/merge-patch+json"
GROUP_PATH = RESOURCE_PATH.rsplit("/", 1)[0]


def _run(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "paiflow-operator.dev/v1alpha1",
        "kind": "PaiPipelineRun",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"pipelineRunId": f"flow-{name}", "suspend": True},
    }


def _row(i: int, status: str, started: datetime, finished: datetime | None) -> PipelineRun:
    """A ListPipelineRuns row as the emulator serves it to the operator in the benchmark."""
    wire: dict[str, Any] = {
        "PipelineRunId": f"flow-c{i}",
        "Name": f"c{i}",
        "Status": status,
        "Message": "",
        "WorkspaceId": "ws-01",
        "PipelineId": "pipeline-bench0000000001",
        "NodeId": f"node-c{i:016d}",
        "UserId": "1557702098194904",
        "ParentUserId": "1557702098194904",
        "SourceType": "SDK",
        "SourceId": "",
        "Accessibility": "PRIVATE",
        "PipelineRunUri": f"https://pai.console.aliyun.com/?regionId=cn-hangzhou&workspaceId=ws-01#/task/flow-c{i}",
        "GmtCreateTime": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "GmtModifiedTime": (finished or started).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "StartedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Duration": int(((finished or datetime.now(UTC)) - started).total_seconds()),
    }
    if finished is not None:
        wire["FinishedAt"] = finished.strftime("%Y-%m-%dT%H:%M:%SZ")
    return PipelineRun.from_wire(wire)


class Statuses:
    """The status patches the operator itself computes (runs/reconcile.py) for each run as PAI moves it on: the
    first status (Running), then an end. A mass finish is one such end per run."""

    def __init__(self) -> None:
        self.spec = PaiPipelineRunSpec(pipelineRunId="flow-c0", workspaceId="ws-01")
        self.current: dict[int, dict[str, Any]] = {}
        self.started = datetime.now(UTC) - timedelta(minutes=10)

    def next(self, i: int, status: str) -> dict[str, Any]:
        current = self.current.get(i, {})
        finished = None if status == "Running" else datetime.now(UTC)
        result = reconcile(self.spec, 1, current, _row(i, status, self.started, finished), datetime.now(UTC))
        patch = result.patch or {}
        self.current[i] = {k: v for k, v in {**current, **patch}.items() if v is not None}
        return patch


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


async def _pool(n: int, in_flight: int, one: Any) -> tuple[float, float]:
    """(seconds, this process's CPU seconds) for n calls of `one`, in_flight at a time."""
    limit = asyncio.Semaphore(in_flight)

    async def guarded(i: int) -> None:
        async with limit:
            for attempt in range(6):
                try:
                    await one(i)
                    return
                except aiohttp.ClientError:
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise RuntimeError(f"request {i} kept failing")

    started, cpu = time.monotonic(), time.process_time()
    await asyncio.gather(*(guarded(i) for i in range(n)))
    return time.monotonic() - started, time.process_time() - cpu


async def _measure(cp: ControlPlane, n: int, in_flight: int) -> dict[str, float]:
    runs = f"{GROUP_PATH}/namespaces/{NAMESPACE}/paipipelineruns"
    events = f"/api/v1/namespaces/{NAMESPACE}/events"
    uids: dict[int, str] = {}
    connector = aiohttp.TCPConnector(limit=max(32, in_flight), ssl=admin_tls(cp.workdir))
    async with aiohttp.ClientSession(base_url=cp.server, connector=connector, trust_env=False) as client:

        async def send(method: str, path: str, body: Any, content_type: str = "application/json") -> bytes:
            data = json.dumps(body).encode() if body is not None else None
            async with client.request(method, path, data=data, headers={"Content-Type": content_type}) as r:
                raw = await r.read()
                if r.status >= 400 and not (method == "POST" and r.status == 409):
                    r.raise_for_status()
                return raw

        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        await send("POST", "/api/v1/namespaces", namespace)

        async def create(i: int) -> None:
            created = json.loads(await send("POST", runs, _run(f"c{i}")))
            if created.get("kind") == "Status":  # 409: made by an earlier try of this request
                created = json.loads(await send("GET", f"{runs}/c{i}", None))
            uids[i] = created["metadata"]["uid"]  # for the Events below

        statuses = Statuses()

        def patches(status: str) -> list[dict[str, Any]]:
            # Computed before the clock starts: the lean client's own cost stays out of the ceiling.
            return [{"status": statuses.next(i, status)} for i in range(n)]

        def patcher(bodies: list[dict[str, Any]], with_event: bool = False) -> Any:
            async def patch(i: int) -> None:
                await send("PATCH", f"{runs}/c{i}/status", bodies[i], MERGE)
                if with_event:
                    await send("POST", events, _event(i, f"c{i}", uids[i]))

            return patch

        create_s, _ = await _pool(n, in_flight, create)
        # One watcher reads every change, as the benchmark's own watch does during a mass finish.
        watcher = asyncio.get_running_loop().create_task(_watch(client, runs))
        try:
            first_s, _ = await _pool(n, in_flight, patcher(patches("Running")))
            ends = patches("Succeeded")
            control_plane = _control_plane_cpu(cp)
            patch_s, patch_cpu = await _pool(n, in_flight, patcher(ends))
            control_plane = _control_plane_cpu(cp) - control_plane
            # The operator's own client, as it ships (kube.KubeApi, settings' kube_concurrency), on the same runs.
            operator_kube = KubeApi(_configuration(cp), concurrency=Settings().kube_concurrency)
            ours = patches("Failed")

            async def operator_patch(i: int) -> None:
                await operator_kube.patch_status(NAMESPACE, f"c{i}", ours[i]["status"])

            try:
                ours_s, ours_cpu = await _pool(n, in_flight, operator_patch)
            finally:
                await operator_kube.aclose()
            both_s, _ = await _pool(n, in_flight, patcher(patches("Succeeded"), with_event=True))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await watcher
        # Gone before the benchmark's own watch lists runs: it must see only the population's.
        with contextlib.suppress(aiohttp.ClientError):
            await send("DELETE", f"/api/v1/namespaces/{NAMESPACE}", {})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            async with client.get(f"/api/v1/namespaces/{NAMESPACE}") as r:
                if r.status == 404:
                    break
            await asyncio.sleep(0.5)
        else:
            raise RuntimeError(f"namespace {NAMESPACE} was not deleted within 300 s")
    return {
        "n": n,
        "in_flight": in_flight,
        "creates_per_second": round(n / create_s, 1),
        # The first status of a run (everything the operator writes of it), then a mass finish's end of it.
        "first_status_patches_per_second": round(n / first_s, 1),
        "status_patches_per_second": round(n / patch_s, 1),
        "patch_and_event_per_second": round(n / both_s, 1),
        # The client's own CPU per patch (this process, all threads): what a write costs the operator's core.
        "lean_cpu_ms_per_patch": round(1000 * patch_cpu / n, 3),
        # etcd + kube-apiserver CPU per patch meanwhile: what each write costs the control plane.
        "control_plane_cpu_ms_per_patch": round(1000 * control_plane / n, 3),
        "operator_client_patches_per_second": round(n / ours_s, 1),
        "operator_client_cpu_ms_per_patch": round(1000 * ours_cpu / n, 3),
    }


def _control_plane_cpu(cp: ControlPlane) -> float:
    samples = [read_proc(pid) for pid in cp.pids.values()]
    return sum(sample.cpu_seconds for sample in samples if sample is not None)


async def _watch(client: aiohttp.ClientSession, path: str) -> None:
    async with client.get(path, params={"watch": "1"}, timeout=aiohttp.ClientTimeout(total=None)) as response:
        async for line in response.content:
            json.loads(line)


def _configuration(cp: ControlPlane) -> kubernetes.client.Configuration:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(cp.kubeconfig), client_configuration=configuration
    )
    return configuration


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

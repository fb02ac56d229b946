"""The thin kopf layer: kopf watches PaiPipelineRuns and feeds the scheduler, which does the rest.

Only `kopf.on.event` is used: it needs no finalizer and no annotations, so the operator's only writes are
status patches and Events, and deleting a resource never waits for the operator.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from typing import Any

import kopf
import prometheus_client

from paiflow_operator import metrics, resource, workspace_resource
from paiflow_operator.kube import KubeApi, load_client_configuration
from paiflow_operator.pai.client import PaiClient
from paiflow_operator.pai.credentials import DefaultChainSource
from paiflow_operator.scheduler import Scheduler
from paiflow_operator.settings import get_settings
from paiflow_operator.workspace_scan import WorkspaceScanner

log = logging.getLogger(__name__)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = get_settings()
    settings.peering.standalone = True
    # kopf would otherwise turn its own log lines into Kubernetes Events: writes nobody asked for.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # List in pages: one unpaged list of 10,000 objects is a memory spike the process keeps for its life.
    settings.watching.chunk_size = config.list_chunk_size

    pai = PaiClient(
        endpoint_override=config.endpoint_override,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_connections=config.concurrency,
        observer=metrics.observe_pai_call,
        extra_regions=config.extra_regions,
    )
    kube = KubeApi(load_client_configuration(), concurrency=config.kube_concurrency)
    scheduler = Scheduler(config, pai, kube, DefaultChainSource())
    memo.pai, memo.kube, memo.scheduler = pai, kube, scheduler
    memo.scanner = WorkspaceScanner(config, pai, kube, scheduler)
    loop = asyncio.get_running_loop()
    memo.scheduler_task = loop.create_task(scheduler.run(), name="paiflow-scheduler")
    memo.trim_task = loop.create_task(_return_freed_memory(), name="paiflow-malloc-trim")
    metrics.register_runs_collector(scheduler.snapshot)
    if config.metrics_port:
        prometheus_client.start_http_server(config.metrics_port)
    log.info(
        "paiflow-operator started: region=%s namespaces=%s shard=%d/%d qps=%s",
        config.default_region,
        ",".join(config.namespaces) or "*",
        config.shard_index,
        config.shard_count,
        config.qps,
    )


async def _return_freed_memory(first: float = 15.0, every: float = 60.0) -> None:
    """Hands memory freed after a relist of thousands of objects back to the OS.

    glibc keeps freed heap pages for reuse, so the peak of an initial list (10,000 objects parsed at once)
    would otherwise stay in the RSS for the life of the process.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (e.g. musl): nothing to trim
    await asyncio.sleep(first)  # soon after the initial list, then now and then
    while True:
        libc.malloc_trim(0)
        await asyncio.sleep(every)


@kopf.on.event(resource.GROUP, resource.VERSION, resource.PLURAL)
async def watch(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # async on purpose: kopf runs sync handlers in a thread pool, and the scheduler's heap and wake-up event
    # belong to the event loop.
    memo.scheduler.observe(event["object"], event["type"])
    metrics.namespace_seen(event["object"].get("metadata", {}).get("namespace", ""))
    memo.scanner.observe_run(event["object"], event["type"])


@kopf.on.event(resource.GROUP, resource.VERSION, workspace_resource.PLURAL)
async def watch_workspaces(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # Each PaiWorkspace gets one scan task (workspace_scan.py); like runs, no finalizer and no annotations.
    memo.scanner.observe_workspace(event["object"], event["type"])


@kopf.on.probe(id="trackedRuns")
def tracked_runs(memo: kopf.Memo, **_: Any) -> int:
    task: asyncio.Task[None] = memo.scheduler_task
    if task.done():
        raise kopf.PermanentError("the poll scheduler has stopped")
    return len(memo.scheduler.runs)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    # SIGTERM: stop polling, let in-flight calls go, close connections. PAI runs are left alone.
    await memo.scanner.stop()
    await memo.scheduler.stop()
    memo.scheduler_task.cancel()
    memo.trim_task.cancel()
    await asyncio.gather(memo.scheduler_task, memo.trim_task, return_exceptions=True)
    await memo.pai.aclose()
    memo.kube.close()
    log.info("paiflow-operator stopped")

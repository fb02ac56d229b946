"""The kopf layer and composition root: builds each object once (the door to PAI, the run writer, the launcher,
the scheduler, the workspace scanner) and feeds them from the watches (kopf's, and the runs' own); probes and
cleanup.

Only `kopf.on.event` is used: it needs no finalizer and no annotations. PaiPipelineRuns, the many, are watched
by the operator's own reflector (watching.py), fed to the same objects. The operator writes status patches
and Events; its one finalizer (launched runs with deletionPolicy Terminate only) is its own, see
runs/launcher.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
import prometheus_client

from paiflow_operator import metrics, process_memory, watching
from paiflow_operator.access.status import PolicyStatusWriter
from paiflow_operator.access.view import AccessView
from paiflow_operator.api import policies as policies_api
from paiflow_operator.api import runs as runs_api
from paiflow_operator.api import schedules as schedules_api
from paiflow_operator.api import workspaces as workspaces_api
from paiflow_operator.kube import KubeApi, load_client_configuration
from paiflow_operator.pai_access import PaiAccess
from paiflow_operator.replicas.handover import Handover
from paiflow_operator.replicas.joining import join_when_listed
from paiflow_operator.replicas.membership import LeaseMembership, default_identity, group_for
from paiflow_operator.replicas.sharding import KeyOwnership, StaticShards
from paiflow_operator.runs.events import EventQueue
from paiflow_operator.runs.launcher import Launcher
from paiflow_operator.runs.notify import Notifier, PolicySinks
from paiflow_operator.runs.scheduler import Scheduler
from paiflow_operator.runs.writes import RunWriter
from paiflow_operator.schedules.controller import ScheduleController
from paiflow_operator.settings import Settings, get_settings
from paiflow_operator.watching import Feed, Scope, Watch
from paiflow_operator.workspaces.scanner import WorkspaceScanner

log = logging.getLogger(__name__)


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: kopf deep-copies every object of every watch event to diff it for on.create/on.update
    handlers and daemons, which this operator has none of (only kopf.on.event). That copy was 7.5% of the
    operator's CPU in a mass finish of 10,000 runs (py-spy), CPU the API server needed."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = get_settings()
    settings.peering.standalone = True
    # kopf would otherwise turn its own log lines into Kubernetes Events: writes nobody asked for.
    settings.posting.enabled = False
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = watching.SERVER_TIMEOUT
    settings.watching.client_timeout = watching.CLIENT_TIMEOUT
    settings.networking.request_timeout = 60
    # List in pages: one unpaged list of 10,000 objects is a memory spike the process keeps for its life.
    settings.watching.chunk_size = config.list_chunk_size
    # kopf's per-object worker keeps the object's last event (the whole object) while it idles for more: with
    # its default 5 s, a list of 10,000 runs held nearly every one at once. The handlers keep what they need.
    settings.queueing.idle_timeout = config.watch_idle_timeout.total_seconds()

    kube = KubeApi(load_client_configuration(), concurrency=config.kube_concurrency)
    # Which namespace may have the operator do what, as whom (PaiAccessPolicies): checked at the door.
    policies = AccessView(allow_all=config.allow_all_namespaces)
    # The one door every PAI call leaves through; it holds the operator's one PaiClient.
    access = PaiAccess.from_settings(config, kube, policies)
    membership: LeaseMembership | None = None
    if config.leases and config.shard_count == 1:
        membership = LeaseMembership(
            kube,
            namespace=config.operator_namespace,
            identity=default_identity(config.pod_name),
            group=group_for(config.lease_group, config.namespaces),
            duration=config.lease_duration.total_seconds(),
            renew_interval=config.lease_renew_interval.total_seconds(),
        )
    # Work that must happen once (run launching, workspace scans) asks memo.ownership.owns_key(key) too.
    ownership: KeyOwnership = membership or StaticShards(config.shard_count, config.shard_index)
    # Every status write and Event of a run, polled or launched, through one write gate.
    # Events of runs go after the status writes in flight (statuses first during a burst: runs/events.py).
    # Scan rows waiting for a write (runs/sync.py) are writes to come: called only once runs are synced.
    events = EventQueue(kube, lambda: writer.in_flight + len(scheduler.sync.rows))
    writer = RunWriter(kube, events=events)
    events.start()
    memo.events = events
    launcher = Launcher(config, access, writer, kube, ownership)
    scheduler = Scheduler(config, access, writer, launcher=launcher, ownership=ownership)
    memo.access, memo.kube, memo.scheduler = access, kube, scheduler
    memo.scanner = WorkspaceScanner(config, access, kube, scheduler.scans, ownership)
    memo.schedules = ScheduleController(config, kube, ownership.owns)
    memo.notifier = notifier = Notifier(config, kube, ownership.owns, sinks=PolicySinks(policies, config.notify_sink))
    if notifier.enabled:
        writer.on_written = notifier.written
    memo.policies = await _start_policies(config, kube, policies, access, ownership, membership)
    # A policy or namespace label change: denied resources are looked at again at once (allowed ones stop at their
    # next call, which the door refuses).
    policies.subscribe(scheduler.recheck_denied)
    policies.subscribe(memo.scanner.recheck_denied)
    memo.membership, memo.ownership = membership, ownership
    memo.feed = scheduler.observe
    if membership is not None:
        handover = Handover(scheduler, membership)
        membership.subscribe(handover.rebalance)
        membership.subscribe(notifier.rebalance)
        membership.subscribe(memo.schedules.rebalance)
        memo.feed = handover.observe
        # Before kopf starts watching: the first events already know the members.
        await membership.start()
    loop = asyncio.get_running_loop()
    # Runs are watched by the operator itself, not kopf (watching.py says why); started last, as kopf would.
    scope = Scope.of(f"/apis/{runs_api.GROUP}/{runs_api.VERSION}", runs_api.PLURAL, config.namespaces)
    memo.runs_watch = runs_watch = Watch(kube, scope, _feed_run(memo), page_size=config.list_chunk_size)
    if membership is not None:
        # Joins once the watch has fed every run there was (replicas/joining.py).
        memo.join_task = loop.create_task(join_when_listed(membership, lambda: runs_watch.listed))
    memo.scheduler_task = loop.create_task(scheduler.run(), name="paiflow-scheduler")
    memo.notifier_task = loop.create_task(notifier.run(), name="paiflow-notifier")
    freezer = process_memory.GcFreezer(config.gc_thaw_interval.total_seconds()) if config.gc_freeze else None
    if freezer is not None:
        freezer.install()
    memo.freezer = freezer
    memo.trim_task = loop.create_task(process_memory.upkeep(freezer), name="paiflow-memory-upkeep")
    metrics.register_runs_collector(scheduler.snapshot)
    memo.runs_watch.start()
    if config.metrics_port:
        prometheus_client.start_http_server(config.metrics_port)
    log.info(
        "paiflow-operator started: region=%s namespaces=%s %s qps=%s",
        config.default_region,
        ",".join(config.namespaces) or "*",
        _sharing(config, membership),
        config.qps,
    )


def _sharing(config: Settings, membership: LeaseMembership | None) -> str:
    if membership is not None:
        return f"identity={membership.identity} lease={membership.namespace}/{membership.lease_name}"
    return f"shard={config.shard_index}/{config.shard_count}"


def _feed_run(memo: kopf.Memo) -> Feed:
    """What every event of a run is given to, from the runs' own watch (watching.py)."""
    feed, scanner, schedules, notifier = memo.feed, memo.scanner, memo.schedules, memo.notifier

    def observe(body: Mapping[str, Any], event_type: str | None) -> None:
        feed(body, event_type)
        meta = body.get("metadata") or {}
        metrics.namespace_seen(meta.get("namespace", ""))
        scanner.observe_run(body, event_type)
        schedules.observe_run(body, event_type)
        notifier.offer(body, event_type)  # after a restart: ended runs whose event is still owed

    return observe


@dataclass
class Policies:
    """The live view of PaiAccessPolicies and Namespace labels, and the writer of the policies' status."""

    view: AccessView
    status_writer: PolicyStatusWriter


async def _start_policies(
    config: Settings,
    kube: KubeApi,
    view: AccessView,
    access: PaiAccess,
    ownership: KeyOwnership,
    membership: LeaseMembership | None,
) -> Policies:
    if config.allow_all_namespaces:
        log.warning(
            "PAIFLOW_ALLOW_ALL_NAMESPACES is on: every watched namespace may have the operator act in any PAI "
            "workspace with its own credentials; PaiAccessPolicies are not enforced"
        )
    writer = PolicyStatusWriter(view, kube, ownership.owns_key)
    view.subscribe(writer.poke)
    view.subscribe(lambda: access.identities.forget(view.role_arns()))
    if membership is not None:
        membership.subscribe(writer.poke)  # a policy's status may now be this replica's to write
    try:
        # Before any resource is looked at: none is denied for want of a policy not yet seen.
        view.load(await kube.list_policies(), await kube.list_namespaces())
    except Exception as exc:
        log.error("could not list PaiAccessPolicies and Namespaces (%s): nothing is allowed until the watch has", exc)
    writer.start()
    return Policies(view, writer)


@kopf.on.event(runs_api.GROUP, runs_api.VERSION, policies_api.PLURAL)
async def watch_policies(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    policies: Policies = memo.policies
    policies.view.observe_policy(event["object"], event["type"])
    policies.status_writer.observe(event["object"], event["type"])


@kopf.on.event("", "v1", "namespaces")
async def watch_namespaces(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # Labels decide which policies select a namespace: a change takes effect at once.
    policies: Policies = memo.policies
    policies.view.observe_namespace(event["object"], event["type"])


@kopf.on.probe(id="members")
def members(memo: kopf.Memo, **_: Any) -> int | None:
    # Replicas sharing the runs as this one sees them (0: it holds no live Lease); None without Leases.
    membership: LeaseMembership | None = memo.membership
    return None if membership is None else len(membership.members)


@kopf.on.event(runs_api.GROUP, runs_api.VERSION, workspaces_api.PLURAL)
async def watch_workspaces(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # Each PaiWorkspace gets one scan task (workspace_scan.py); like runs, no finalizer and no annotations.
    memo.scanner.observe_workspace(event["object"], event["type"])


@kopf.on.event(runs_api.GROUP, runs_api.VERSION, schedules_api.PLURAL)
async def watch_schedules(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # One task per PaiPipelineSchedule (schedules/controller.py); no finalizer, no annotations.
    memo.schedules.observe_schedule(event["object"], event["type"])


@kopf.on.probe(id="trackedRuns")
def tracked_runs(memo: kopf.Memo, **_: Any) -> int:
    task: asyncio.Task[None] = memo.scheduler_task
    if task.done():
        raise kopf.PermanentError("the poll scheduler has stopped")
    runs_watch: Watch = memo.runs_watch
    if runs_watch.task is None or runs_watch.task.done():
        raise kopf.PermanentError("the watch of PaiPipelineRuns has stopped")
    return len(memo.scheduler.runs)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    # SIGTERM: hand the runs over (others poll them before this replica stops), stop polling, let in-flight
    # calls go, close connections. PAI runs are left alone.
    membership: LeaseMembership | None = getattr(memo, "membership", None)
    if membership is not None:
        config = get_settings()
        # The others notice at their next round and poll what they took within the initial jitter.
        drain = config.lease_renew_interval + config.initial_jitter + config.batch_window
        await membership.leave(drain.total_seconds())
    await memo.runs_watch.stop()
    await memo.scanner.stop()
    await memo.schedules.stop()
    await memo.scheduler.stop()
    await memo.policies.status_writer.stop()
    await memo.events.stop()
    if membership is not None:
        memo.join_task.cancel()
        await membership.stop()
    memo.scheduler_task.cancel()
    memo.trim_task.cancel()
    memo.notifier_task.cancel()
    await asyncio.gather(memo.scheduler_task, memo.trim_task, memo.notifier_task, return_exceptions=True)
    await memo.notifier.stop()
    if memo.freezer is not None:
        memo.freezer.uninstall()
    await memo.access.aclose()
    await memo.kube.aclose()
    log.info("paiflow-operator stopped")

"""Completion notifications: one CloudEvent (1.0, HTTP binary mode) per ended PaiPipelineRun, at least once.

Fed without waiting by the status writer (a run just written as ended) and by the watch (after a restart, a run
ended with no delivery recorded). Deliveries run on their own task, queue and HTTP client: a slow or dead sink
never delays a status write. What was delivered is recorded in status.notification, which is how a restart
knows what is still owed; an unacknowledged POST (non-2xx, timeout, refused, the operator killed) is sent again
with capped backoff, with the same event id, so a consumer can drop the rare duplicate.

The sink is an administrator's choice (settings.notify_sink, or one a PaiAccessPolicy lists, which a run picks by
name with spec.notify.sink), never a resource's URL: a URL a user chose would make the operator a way into the
cluster's internal services. The HTTP client carries no
credentials and reads nothing from the environment (no proxy, no .netrc); https certificates are verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from paiflow_operator import metrics
from paiflow_operator.access.policy import matching
from paiflow_operator.access.view import AccessView
from paiflow_operator.api import runs as runs_api
from paiflow_operator.conditions import parse_timestamp, timestamp
from paiflow_operator.kube import FIELD_MANAGER, KubeError
from paiflow_operator.runs.reconcile import backoff_delay
from paiflow_operator.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_SINK = "default"
TYPE_PREFIX = "dev.paiflow-operator.pipelinerun"
# Tekton's style (dev.tekton.event.pipelinerun.successful.v1), one type per end state.
TYPES = {
    "Succeeded": f"{TYPE_PREFIX}.succeeded.v1",
    "Failed": f"{TYPE_PREFIX}.failed.v1",
    "Terminated": f"{TYPE_PREFIX}.terminated.v1",
    "Skipped": f"{TYPE_PREFIX}.skipped.v1",
}


class StatusWriter(Protocol):
    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SinkTarget:
    name: str  # what status.notification records (never the URL: status is readable by the namespace's users)
    url: str


class SinkChoice(Protocol):
    """Which sink a run's event goes to (None: none). The seam for sinks an access policy lists."""

    def sink_for(self, body: Mapping[str, Any]) -> SinkTarget | None: ...


@dataclass(frozen=True)
class OperatorSink:
    """The operator-wide sink (settings.notify_sink), for every run."""

    url: str | None

    def sink_for(self, body: Mapping[str, Any]) -> SinkTarget | None:
        return SinkTarget(DEFAULT_SINK, self.url) if self.url else None


class PolicySinks:
    """A run's spec.notify.sink, looked up among the sinks the PaiAccessPolicies selecting its namespace list
    (read live, so a policy change applies to the next delivery); without spec.notify, the operator-wide sink.
    A name no selecting policy lists gets nothing: a user picks among an admin's URLs, never names one."""

    def __init__(self, view: AccessView, default_url: str | None) -> None:
        self.view = view
        self.default = OperatorSink(default_url)
        self._unknown: set[tuple[str, str]] = set()

    def sink_for(self, body: Mapping[str, Any]) -> SinkTarget | None:
        chosen = ((body.get("spec") or {}).get("notify") or {}).get("sink")
        if not chosen:
            return self.default.sink_for(body)
        namespace = (body.get("metadata") or {}).get("namespace", "")
        for policy in matching(self.view.policies.values(), self.view.namespace(namespace)):
            for sink in policy.spec.sinks or []:
                if sink.name == chosen:
                    return SinkTarget(chosen, sink.url)
        if (namespace, chosen) not in self._unknown:
            self._unknown.add((namespace, chosen))
            log.warning("no PaiAccessPolicy selecting namespace %s lists the sink %r: no event sent", namespace, chosen)
        return None


def _runstatus_manager(meta: Mapping[str, Any]) -> str | None:
    for entry in meta.get("managedFields") or []:
        if "f:runStatus" in ((entry.get("fieldsV1") or {}).get("f:status") or {}):
            manager: str | None = entry.get("manager")
            return manager
    return None


def source_of(namespace: str, name: str) -> str:
    return f"/apis/{runs_api.API_VERSION}/namespaces/{namespace}/{runs_api.PLURAL}/{name}"


def build_event(body: Mapping[str, Any]) -> CloudEvent:
    """The CloudEvent for an ended run: source the resource, subject the PAI run id, data its status."""
    meta, status = body.get("metadata") or {}, dict(body.get("status") or {})
    run_status = status["runStatus"]
    status.pop("notification", None)  # the operator's bookkeeping, not the run's
    attributes: dict[str, Any] = {
        "id": f"{meta.get('uid', '')}.{run_status.lower()}",
        "type": TYPES[run_status],
        "source": source_of(meta.get("namespace", ""), meta.get("name", "")),
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "time": parse_timestamp(status.get("finishedAt") or status.get("lastSyncTime")) or datetime.now(UTC),
    }
    if status.get("pipelineRunId"):
        attributes["subject"] = status["pipelineRunId"]
    return CloudEvent(attributes, status)


@dataclass
class Pending:
    namespace: str
    name: str
    uid: str
    body: dict[str, Any]
    attempts: int = 0
    seq: int = 0
    busy: bool = False
    delivered_at: datetime | None = None  # POST acknowledged; only the status record is left

    @property
    def type(self) -> str:
        return TYPES[self.body["status"]["runStatus"]]


class Notifier:
    def __init__(
        self,
        settings: Settings,
        kube: StatusWriter,
        owns: Callable[[str], bool],
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        sinks: SinkChoice | None = None,
    ) -> None:
        self.settings = settings
        self.sinks: SinkChoice = sinks or OperatorSink(settings.notify_sink)
        self.enabled = sinks is not None or settings.notify_sink is not None
        self.kube = kube
        self.owns = owns
        # No auth, no cookies, nothing from the environment (proxies, .netrc); certificates verified.
        self.client = client or httpx.AsyncClient(timeout=settings.notify_timeout, trust_env=False, verify=True)
        self.clock = clock
        self.wallclock = wallclock
        self.rng = rng or random.Random()
        self.pending: dict[str, Pending] = {}
        self.others: dict[str, dict[str, Any]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count(1)
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.notify_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- fed without waiting -------------------------------------------------------------------------

    def written(self, body: Mapping[str, Any]) -> None:
        """The status writer's hook: a status it just wrote (the answer of its patch)."""
        self.offer(body)

    def offer(self, body: Mapping[str, Any], event_type: str | None = None) -> None:
        """Queues the run's CloudEvent if it has ended and none was delivered for that end; never blocks."""
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        uid = meta.get("uid", "")
        if event_type == "DELETED":
            self.others.pop(uid, None)
            return  # a pending delivery of a deleted run still goes (its record write will find nothing)
        if not self.enabled or not uid or not self._owed(meta, status) or self.sinks.sink_for(body) is None:
            self.pending.pop(uid, None)
            self.others.pop(uid, None)
            return
        snapshot = {
            "metadata": dict(meta),
            "spec": {"notify": (body.get("spec") or {}).get("notify")},
            "status": dict(status),
        }
        if not self.owns(uid):
            # Another replica's (or, right after a restart, a dead replica's whose Lease has not expired yet):
            # kept until a membership change makes it ours (rebalance) or its delivery record arrives.
            if uid in self.others or len(self.others) < self.settings.notify_queue_size:
                self.others[uid] = snapshot
            return
        self.others.pop(uid, None)
        item = self.pending.get(uid)
        if item is not None:
            item.body = snapshot
            return
        if len(self.pending) >= self.settings.notify_queue_size:
            metrics.NOTIFICATIONS.labels("dropped").inc()
            log.warning("notification queue full: %s/%s not queued", meta.get("namespace"), meta.get("name"))
            return
        item = Pending(meta.get("namespace", ""), meta.get("name", ""), uid, snapshot)
        self.pending[uid] = item
        metrics.NOTIFICATIONS_PENDING.set(len(self.pending))
        self._push(item, self.clock())

    def _owed(self, meta: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        run_status = status.get("runStatus")
        if run_status not in TYPES:
            return False
        delivered = status.get("notification") or {}
        if delivered.get("type") == TYPES[run_status] and delivered.get("deliveredAt"):
            return False
        # Only an end the operator itself wrote (a status forged through the subresource is confirmed with PAI
        # first, see scheduler._needs_confirmation), of a run that ended after its resource was made (an
        # imported run that had long ended is not news) and recently (a new sink does not replay history).
        if _runstatus_manager(meta) not in (FIELD_MANAGER, None):
            return False
        ended = parse_timestamp(status.get("finishedAt")) or parse_timestamp(status.get("lastSyncTime"))
        created = parse_timestamp(meta.get("creationTimestamp"))
        if ended is not None and created is not None and ended < created:
            return False
        return ended is None or ended >= self.wallclock() - self.settings.notify_window

    def rebalance(self) -> None:
        """After a membership change: the runs waiting for another replica that are now this one's."""
        for uid, body in list(self.others.items()):
            if self.owns(uid):
                self.offer(body)

    def _push(self, item: Pending, due: float) -> None:
        item.seq = next(self._seq)
        heapq.heappush(self._heap, (due, item.seq, item.uid))
        self._wake.set()

    # ---- the delivery loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            now = self.clock()
            while self._heap and self._heap[0][0] <= now:
                _, seq, uid = heapq.heappop(self._heap)
                item = self.pending.get(uid)
                if item is None or item.seq != seq or item.busy:
                    continue
                item.busy = True
                await self._slots.acquire()
                task = asyncio.get_running_loop().create_task(self._attempt(item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self._wake.clear()
            timeout = self._heap[0][0] - self.clock() if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), None if timeout is None else max(timeout, 0.0))

    async def _attempt(self, item: Pending) -> None:
        try:
            done = await self._deliver(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let one delivery end the loop
            log.warning("notification for %s/%s failed: %s", item.namespace, item.name, type(exc).__name__)
            done = False
        finally:
            self._slots.release()
            item.busy = False
        if done:
            if self.pending.get(item.uid) is item:
                del self.pending[item.uid]
            metrics.NOTIFICATIONS_PENDING.set(len(self.pending))
            return
        s = self.settings
        delay = backoff_delay(max(item.attempts, 1), s.notify_backoff_base, s.notify_backoff_max).total_seconds()
        self._push(item, self.clock() + self.rng.uniform(delay / 2, delay))

    async def _deliver(self, item: Pending) -> bool:
        """One try: POST (unless already acknowledged), then record it in status. True when both are done."""
        target = self.sinks.sink_for(item.body)
        if target is None:
            return True  # no sink any more (a policy changed): nothing owed
        if item.delivered_at is None:
            event = build_event(item.body)
            message = to_binary_event(event)
            item.attempts += 1
            try:
                response = await self.client.post(target.url, content=message.body, headers=dict(message.headers))
                ok = 200 <= response.status_code < 300
                why = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok, why = False, type(exc).__name__
            if not ok:
                metrics.NOTIFICATIONS.labels("retried").inc()
                level = logging.WARNING if item.attempts == 1 or item.attempts % 10 == 0 else logging.DEBUG
                log.log(level, "sink did not take the event for %s/%s (%s, attempt %d); will retry",
                        item.namespace, item.name, why, item.attempts)  # fmt: skip
                return False
            item.delivered_at = self.wallclock()
            metrics.NOTIFICATIONS.labels("delivered").inc()
            log.info("delivered %s for %s/%s", event.get_type(), item.namespace, item.name)
        record = {
            "sink": target.name,
            "type": item.type,
            "id": f"{item.uid}.{item.body['status']['runStatus'].lower()}",
            "deliveredAt": timestamp(item.delivered_at),
            "attempts": item.attempts,
        }
        try:
            await self.kube.patch_status(item.namespace, item.name, {"notification": record})
            metrics.KUBE_WRITES.labels("status").inc()
        except KubeError as exc:
            if exc.status == 404:
                return True  # the run is gone: nothing to record on
            log.warning("recording the notification of %s/%s failed: %s", item.namespace, item.name, exc)
            return False
        return True

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()

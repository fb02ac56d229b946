"""PaiPipelineSchedule I/O: one task per schedule applies plan.py's decisions (create, terminate, delete, status).

Each slot's run has a name made of the schedule's name and the slot (plan.run_name), so the API server itself
refuses a second object for one slot: a crash between the create and the status write, a restart or two replicas
acting at once end in a 409, which means "already made". One replica acts on a schedule (`owns(uid)`, the same
split as workspaces and runs); the launch protocol then makes exactly one PAI run of each object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from paiflow_operator import metrics
from paiflow_operator.api import runs as runs_api
from paiflow_operator.api import schedules as api
from paiflow_operator.conditions import Event, parse_timestamp, timestamp
from paiflow_operator.kube import KubeError, ObjectRef
from paiflow_operator.runs.reconcile import backoff_delay
from paiflow_operator.schedules import plan as schedule_plan
from paiflow_operator.schedules.plan import OwnedRun
from paiflow_operator.settings import Settings

log = logging.getLogger(__name__)


class ScheduleKube(Protocol):
    async def create_run(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def delete_run(self, namespace: str, name: str, uid: str) -> None: ...

    async def patch_run_spec(self, namespace: str, name: str, patch: dict[str, Any], uid: str) -> dict[str, Any]: ...

    async def patch_schedule_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    async def create_event(self, ref: ObjectRef, event: Event, now: datetime | None = None) -> None: ...


def schedule_time(settings: Settings) -> Callable[[datetime], datetime]:
    """Wall-clock time -> the schedules' time: the same, or in tests a clock running `schedule_clock_rate` times
    as fast from `schedule_clock_anchor` on (a function of the wall clock, so every process agrees, across
    restarts too). Applied to now and to the schedule's creationTimestamp alike."""
    rate, anchor = settings.schedule_clock_rate, settings.schedule_clock_anchor
    if rate == 1.0 or anchor is None:
        return lambda t: t
    start = anchor if anchor.tzinfo else anchor.replace(tzinfo=UTC)
    return lambda t: start + (t - start) * rate


def owner_uid(body: Mapping[str, Any]) -> str | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == api.KIND:
            uid: str | None = ref.get("uid")
            return uid
    return None


def label_value(name: str) -> str:
    """The schedule label's value: its name, or (longer than a label value may be) the bounded run-name form."""
    return name if len(name) <= 63 else schedule_plan.run_name(name, datetime(1970, 1, 1, tzinfo=UTC))[:63]


def run_body(namespace: str, meta: Mapping[str, Any], template: Mapping[str, Any], slot: datetime) -> dict[str, Any]:
    """The PaiPipelineRun for one slot: the template's labels, annotations and spec, owned by the schedule."""
    name = meta.get("name", "")
    tmeta = template.get("metadata") or {}
    return {
        "apiVersion": runs_api.API_VERSION,
        "kind": runs_api.KIND,
        "metadata": {
            "name": schedule_plan.run_name(name, slot),
            "namespace": namespace,
            "labels": {**(tmeta.get("labels") or {}), api.SCHEDULE_LABEL: label_value(name)},
            "annotations": {**(tmeta.get("annotations") or {}), api.SCHEDULED_AT_ANNOTATION: timestamp(slot)},
            "ownerReferences": [
                {
                    "apiVersion": runs_api.API_VERSION,
                    "kind": api.KIND,
                    "name": name,
                    "uid": meta.get("uid", ""),
                    "controller": True,
                    # True would need update rights on paipipelineschedules/finalizers; background deletion works.
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": dict(template.get("spec") or {}),
    }


@dataclass
class Watched:
    namespace: str
    name: str
    uid: str
    generation: int
    created: datetime
    spec: api.PaiPipelineScheduleSpec | None
    body: dict[str, Any]
    status: dict[str, Any]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    failures: int = 0
    # Slots whose skip or missed-slot Event was posted by this process (the status records it for the others).
    told: set[tuple[str, str]] = field(default_factory=set)


class ScheduleController:
    def __init__(
        self,
        settings: Settings,
        kube: ScheduleKube,
        owns: Callable[[str], bool],
        *,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.owns = owns
        self.time = schedule_time(settings)
        self.wallclock = wallclock
        self.monotonic = monotonic
        self.schedules: dict[tuple[str, str], Watched] = {}
        # Runs owned by a schedule: schedule uid -> run uid -> run.
        self.runs: dict[str, dict[str, OwnedRun]] = {}
        self._run_owner: dict[str, str] = {}

    def now(self) -> datetime:
        return self.time(self.wallclock())

    # ---- fed by the watches -------------------------------------------------------------------------

    def observe_run(self, body: Mapping[str, Any], event_type: str | None) -> None:
        meta = body.get("metadata") or {}
        uid = meta.get("uid", "")
        owner = owner_uid(body) or self._run_owner.get(uid)
        if owner is None:
            return
        if event_type == "DELETED":
            self.runs.get(owner, {}).pop(uid, None)
            self._run_owner.pop(uid, None)
        else:
            self.runs.setdefault(owner, {})[uid] = schedule_plan.owned_run_from_body(body)
            self._run_owner[uid] = owner
        for watched in self.schedules.values():
            if watched.uid == owner:
                watched.wake.set()

    def observe_schedule(self, body: Mapping[str, Any], event_type: str | None) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self._drop(key)
            return
        try:
            spec: api.PaiPipelineScheduleSpec | None = api.PaiPipelineScheduleSpec.model_validate(
                body.get("spec") or {}
            )
        except ValueError as exc:
            # The CRD's schema makes this unreachable short of a schema change; never crash the watch.
            log.warning("ignoring PaiPipelineSchedule %s/%s with an invalid spec: %s", key[0], key[1], exc)
            spec = None
        current = self.schedules.get(key)
        if current is not None and current.uid != meta.get("uid"):
            self._drop(key)
            current = None
        generation = int(meta.get("generation") or 0)
        stamp = parse_timestamp(meta.get("creationTimestamp"))
        created = self.time(stamp) if stamp is not None else self.now()
        if current is None:
            current = Watched(key[0], key[1], meta.get("uid", ""), generation, created, spec, dict(body), {})
            current.status = dict(body.get("status") or {})
            self.schedules[key] = current
            current.task = asyncio.get_running_loop().create_task(self._loop(current), name=f"ppsched-{key[1]}")
            return
        current.generation, current.spec, current.body = generation, spec, dict(body)
        current.status = dict(body.get("status") or {})
        current.wake.set()

    def rebalance(self) -> None:
        """The replicas changed: every schedule looks again at once (a new owner acts without waiting a resync)."""
        for watched in self.schedules.values():
            watched.wake.set()

    def _drop(self, key: tuple[str, str]) -> None:
        watched = self.schedules.pop(key, None)
        if watched is not None and watched.task is not None:
            watched.task.cancel()

    async def stop(self) -> None:
        tasks = [w.task for w in self.schedules.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- the loop -----------------------------------------------------------------------------------------

    async def _loop(self, w: Watched) -> None:
        resync = self.settings.schedule_resync_interval.total_seconds()
        while True:
            w.wake.clear()  # before acting, so that a change during it is not lost
            wait = resync
            if self.owns(w.uid) and w.spec is not None:
                try:
                    wait = min(wait, await self.reconcile(w))
                    w.failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    w.failures += 1
                    s = self.settings
                    wait = backoff_delay(w.failures, s.backoff_base, s.backoff_max).total_seconds()
                    log.warning("PaiPipelineSchedule %s/%s: %s; retrying in %.0f s", w.namespace, w.name, exc, wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.wake.wait(), max(wait, 0.05))

    async def reconcile(self, w: Watched) -> float:
        """One pass: returns the seconds (wall clock) until the next one is due."""
        assert w.spec is not None
        now = self.now()
        runs = list(self.runs.get(w.uid, {}).values())
        p = schedule_plan.plan(w.name, w.generation, w.created, w.spec, w.status, runs, now)
        events = list(p.events)
        for run in p.terminate:
            try:
                await self.kube.patch_run_spec(w.namespace, run.name, {"terminate": True}, run.uid)
                metrics.KUBE_WRITES.labels("patch").inc()
                events.append(Event("Normal", "Replacing", f"Terminating {run.name} (concurrencyPolicy Replace)"))
            except KubeError as exc:
                if exc.status not in (404, 409, 422):
                    raise
        if p.create is not None and p.create_name is not None:
            body = run_body(w.namespace, w.body.get("metadata") or {}, w.body["spec"]["runTemplate"], p.create)
            try:
                made = await self.kube.create_run(w.namespace, body)
                metrics.KUBE_WRITES.labels("create").inc()
                self.observe_run(made, "ADDED")
                events.append(Event("Normal", "SuccessfulCreate", f"Created run {p.create_name}"))
                p.status["active"] = [*(p.status["active"] or []), _ref(made)]
                p.status["activeCount"] = len(p.status["active"])
            except KubeError as exc:
                if exc.status != 409:
                    raise  # no status write: the slot stays owed and is tried again with backoff
                # The slot's run exists (made before a crash, or by another replica): nothing to do.
                log.info("run %s/%s for slot %s already exists", w.namespace, p.create_name, timestamp(p.create))
        for run in p.delete:
            try:
                await self.kube.delete_run(w.namespace, run.name, run.uid)
                metrics.KUBE_WRITES.labels("delete").inc()
                events.append(Event("Normal", "SuccessfulDelete", f"Deleted run {run.name} (history limit)"))
            except KubeError as exc:
                if exc.status not in (404, 409):
                    raise
        await self._write_status(w, p.status)
        await self._post(w, events, p)
        if p.requeue_at is None:
            return self.settings.schedule_resync_interval.total_seconds()
        return max((p.requeue_at - now).total_seconds() / self.settings.schedule_clock_rate, 0.0)

    async def _write_status(self, w: Watched, desired: dict[str, Any]) -> None:
        current = w.status
        patch = {k: v for k, v in desired.items() if current.get(k) != v and not (v is None and k not in current)}
        if not patch:
            return
        written = await self.kube.patch_schedule_status(w.namespace, w.name, patch)
        metrics.KUBE_WRITES.labels("status").inc()
        w.status = dict(written.get("status") or {**current, **patch})

    async def _post(self, w: Watched, events: list[Event], p: schedule_plan.Plan) -> None:
        ready = next((c for c in w.status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if p.error is not None and ready is not None and (p.error.reason, str(p.error)) not in w.told:
            w.told.add((p.error.reason, str(p.error)))
            events.append(Event("Warning", p.error.reason, str(p.error)))
        ref = ObjectRef(w.namespace, w.name, w.uid, None, kind=api.KIND)
        for event in events:
            level = logging.WARNING if event.type == "Warning" else logging.INFO
            log.log(level, "PaiPipelineSchedule %s/%s %s: %s", w.namespace, w.name, event.reason, event.message)
            try:
                await self.kube.create_event(ref, event, datetime.now(UTC))
                metrics.KUBE_WRITES.labels("event").inc()
            except Exception as exc:
                log.warning("event for PaiPipelineSchedule %s/%s not posted: %s", w.namespace, w.name, exc)


def _ref(body: Mapping[str, Any]) -> dict[str, str]:
    meta = body.get("metadata") or {}
    return {"name": meta.get("name", ""), "uid": meta.get("uid", "")}

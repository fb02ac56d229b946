"""One poll scheduler for all resources, fed by kopf's watch.

Why not a kopf timer per resource: at 10,000 objects kopf's timers alone cost a third of a core, and each
timer adds a finalizer (one write per object, and deletes hang while the operator is down). Here a single
heap orders the due polls; runs of one workspace that fall due together are answered by one
ListPipelineRunsStatus; a global token bucket caps the PAI call rate; finished runs leave the heap for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from paiflow_operator import metrics
from paiflow_operator.api.runs import FINALIZER, PaiPipelineRunSpec
from paiflow_operator.conditions import Event, parse_timestamp
from paiflow_operator.guards.circuit import CircuitBreaker
from paiflow_operator.guards.write_gate import WriteGate
from paiflow_operator.kube import FIELD_MANAGER, KubeError, ObjectRef
from paiflow_operator.pai.errors import ErrorKind, MalformedResponseError, PaiError
from paiflow_operator.pai.models import PipelineRun
from paiflow_operator.pai_access import Action, IdentityKey, PaiAccess, identity_key
from paiflow_operator.replicas.sharding import Ownership, StaticShards
from paiflow_operator.runs.launcher import Launcher
from paiflow_operator.runs.reconcile import (
    Observation,
    Policy,
    Retry,
    SyncResult,
    backoff_delay,
    is_finished,
    reconcile,
    suspended,
)
from paiflow_operator.runs.tracked import Key, Tracked, caller, runstatus_manager
from paiflow_operator.settings import Settings

log = logging.getLogger(__name__)

# (region, PAI workspace id, credentials: None for the operator's own, else (namespace, Secret ref fields))
ScanKey = tuple[str, str, IdentityKey]


class KubeWriter(Protocol):
    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    async def create_event(self, ref: ObjectRef, event: Event, now: datetime | None = None) -> None: ...


def observation_is_answer(observation: Observation) -> bool:
    """Any answer from PAI but a retryable error: PAI is up, even if it says a run is missing."""
    return not (isinstance(observation, PaiError) and observation.retryable)


def _ready_message(status: Mapping[str, Any]) -> str | None:
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return None if ready is None else ready.get("message")


def _ready_true(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        access: PaiAccess,
        kube: KubeWriter,
        *,
        launcher: Launcher | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        ownership: Ownership | None = None,
    ) -> None:
        self.settings = settings
        self.access = access
        self.kube = kube
        self.rng = rng or random.Random()
        self.clock = clock
        self.wallclock = wallclock
        self.policy = Policy(settings.heartbeat_interval, settings.max_text_field_bytes, settings.error_grace)
        self.runs: dict[Key, Tracked] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.ownership: Ownership = ownership or StaticShards(settings.shard_count, settings.shard_index)
        self._stopping = False
        # Workspace scans running on this replica: scan key -> scan interval (seconds).
        self._scans: dict[ScanKey, float] = {}
        self.breaker = CircuitBreaker(
            settings.circuit_failures,
            settings.circuit_probe_interval.total_seconds(),
            settings.circuit_probe_max.total_seconds(),
            clock,
        )
        # Runs held while their region's circuit is open, by region: no calls, no heap entries.
        self._held: dict[str, dict[Key, Tracked]] = defaultdict(dict)
        self.write_gate = WriteGate()
        # Namespaces told about the current outage of a region by an Event: one Event per namespace per outage.
        self._outage_told: set[tuple[str, int, str, str]] = set()
        # Starts and terminates runs of resources with spec.launch (launcher.py); None: launching is off.
        self.launcher = launcher

    # ---- fed by the watch -------------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        """Called for every watch event (kopf.on.event): keeps the registry and the heap current."""
        meta = body.get("metadata", {})
        key: Key = (meta.get("namespace", ""), meta.get("name", ""))
        finalizers = tuple(meta.get("finalizers") or ())
        deleting = bool(meta.get("deletionTimestamp"))
        if event_type == "DELETED" or (deleting and FINALIZER not in finalizers) or not self.owns(meta.get("uid", "")):
            self.forget(key)
            return
        try:
            spec = PaiPipelineRunSpec.model_validate(body.get("spec") or {})
        except ValueError as exc:
            # The CRD's schema makes this unreachable short of a schema change; never crash the watch.
            log.warning("ignoring %s/%s with an invalid spec: %s", key[0], key[1], exc)
            self.forget(key)
            return
        generation = int(meta.get("generation") or 0)
        status = dict(body.get("status") or {})
        tracked = self.runs.get(key)
        if tracked is None or tracked.uid != meta.get("uid"):
            tracked = Tracked(key[0], key[1], meta.get("uid", ""), generation, spec, status, since=self.clock())
            tracked.resource_version = meta.get("resourceVersion")
            tracked.last_detail = self._detail_age_from_status(status)
            tracked.deleting, tracked.finalizers = deleting, finalizers
            self.runs[key] = tracked
            pending = self._needs_confirmation(tracked, meta) or self._launch_pending(tracked)
            if not is_finished(status, generation) or spec.suspend or pending:
                jitter = self.rng.uniform(0, self.settings.initial_jitter.total_seconds())
                self._schedule(tracked, self.clock() + jitter + self._first_sync_wait(tracked))
            return
        spec_changed = generation != tracked.generation
        tracked.generation, tracked.spec, tracked.status = generation, spec, status
        tracked.resource_version = meta.get("resourceVersion")
        newly_deleting = deleting and not tracked.deleting
        tracked.deleting, tracked.finalizers = deleting, finalizers
        if not spec_changed and tracked.due is None and not tracked.busy and self._needs_confirmation(tracked, meta):
            # Someone else wrote a terminal status into a run this operator had finished with: ask PAI once.
            self._schedule(tracked, self.clock())
            return
        if not spec_changed and newly_deleting and tracked.busy:
            tracked.rerun = True  # a delete to act on: look again as soon as the poll in flight ends
        soon = tracked.due is None or newly_deleting
        if not spec_changed and not tracked.busy and soon and self._launch_pending(tracked):
            # Launch work with nothing scheduled soon (a delete, a finished run still holding the finalizer).
            self._schedule(tracked, self.clock())
        if spec_changed:
            # A changed spec earns one fresh look, even at a finished run.
            tracked.attempt = 0
            tracked.last_detail = None
            if tracked.busy:
                tracked.rerun = True
            else:
                self._schedule(tracked, self.clock())

    def _needs_confirmation(self, tracked: Tracked, meta: Mapping[str, Any]) -> bool:
        """A terminal status that this operator did not write is confirmed once with PAI before it is trusted.

        Polling stops at a terminal status, so a forged one (a user with access to the status subresource,
        before the operator's next poll or while it is down) would otherwise stand for good. Who last set
        status.runStatus is in the object's managedFields, which the API server keeps.
        """
        if not is_finished(tracked.status, tracked.generation) or tracked.spec.suspend:
            return False
        if tracked.resource_version is not None and tracked.resource_version == tracked.confirmed_version:
            return False
        return runstatus_manager(meta) != FIELD_MANAGER

    def _detail_age_from_status(self, status: Mapping[str, Any]) -> float | None:
        """After a restart, a status confirmed recently needs no fresh GetPipelineRun: batching can answer."""
        synced = parse_timestamp(status.get("lastSyncTime"))
        if synced is None or status.get("runStatus") is None:
            return None
        age = (self.wallclock() - synced).total_seconds()
        return self.clock() - max(age, 0.0)

    def _launch_pending(self, tracked: Tracked) -> bool:
        if tracked.spec.suspend and not tracked.deleting:
            return False  # a suspended launch waits for the spec change that unsuspends it
        return self.launcher is not None and self.launcher.wants(tracked)

    def owns(self, uid: str) -> bool:
        return self.ownership.owns(uid)

    def forget(self, key: Key) -> None:
        # Dropping the entry is enough: heap entries and in-flight results for it are ignored.
        self.runs.pop(key, None)

    def rebalance(self) -> list[dict[str, Any]]:
        """Forgets, at once, the runs this replica no longer owns (the members changed) and returns each as a
        watch body, for handover.Handover to keep until they are this replica's again."""
        released = []
        for key, tracked in list(self.runs.items()):
            if not self.owns(tracked.uid):
                self.forget(key)
                meta: dict[str, Any] = {"namespace": tracked.namespace, "name": tracked.name, "uid": tracked.uid}
                meta |= {"generation": tracked.generation, "resourceVersion": tracked.resource_version}
                spec = tracked.spec.model_dump(mode="json", exclude_none=True)
                released.append({"metadata": meta, "spec": spec, "status": tracked.status})
        return released

    def snapshot(self) -> Iterable[metrics.RunSnapshot]:
        for run in list(self.runs.values()):
            # Active: anything still to be read from PAI, also while it waits for a rate-limit token or is held
            # by an open circuit (its due time is cleared then, but its status is getting older all the same).
            active = run.due is not None or run.busy or run.key in self._held[self._region(run.spec)]
            yield metrics.RunSnapshot(run.status.get("runStatus"), active, run.last_ok, run.since)

    # ---- the loop ---------------------------------------------------------------------------------

    def _schedule(self, tracked: Tracked, due: float | None) -> None:
        tracked.heap_version += 1
        tracked.due = due
        if due is not None:
            heapq.heappush(self._heap, (due, tracked.heap_version, tracked.key))
            if self._heap[0][2] == tracked.key:
                self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            now = self.clock()
            horizon = now + self.settings.batch_window.total_seconds()
            due: list[Tracked] = []
            while self._heap and self._heap[0][0] <= now:
                _, version, key = heapq.heappop(self._heap)
                tracked = self.runs.get(key)
                if tracked is None or tracked.heap_version != version or tracked.busy:
                    continue
                due.append(tracked)
            if due:
                # Pull in what falls due shortly, so that runs of one workspace share a status query.
                due.extend(self._pop_batchable(horizon, {self._batch_key(t) for t in due}))
                self._dispatch(due)
                continue
            self._wake.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _pop_batchable(self, horizon: float, keys: set[tuple[Any, ...] | None]) -> list[Tracked]:
        keys.discard(None)
        if not keys:
            return []
        early: list[Tracked] = []
        keep: list[tuple[float, int, Key]] = []
        while self._heap and self._heap[0][0] <= horizon:
            entry = heapq.heappop(self._heap)
            tracked = self.runs.get(entry[2])
            if tracked is None or tracked.heap_version != entry[1] or tracked.busy:
                continue
            if self._batch_key(tracked) in keys:
                early.append(tracked)
            else:
                keep.append(entry)
        for entry in keep:
            heapq.heappush(self._heap, entry)
        return early

    def _dispatch(self, due: list[Tracked]) -> None:
        groups: dict[tuple[Any, ...], list[Tracked]] = defaultdict(list)
        for tracked in due:
            region = self._region(tracked.spec)
            if self.breaker.is_open(region) and not self.breaker.is_prober(region, tracked.key):
                self._hold(tracked)
                continue
            tracked.busy = True
            tracked.due = None
            key = self._batch_key(tracked)
            if key is None:
                self._spawn(self._sync_one(tracked))
            else:
                groups[key].append(tracked)
        for key, members in groups.items():
            for start in range(0, len(members), self.settings.batch_size):
                chunk = members[start : start + self.settings.batch_size]
                if len(chunk) == 1:
                    self._spawn(self._sync_one(chunk[0]))
                else:
                    self._spawn(self._sync_batch(key, chunk))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- one run, one batch -----------------------------------------------------------------------

    def _region(self, spec: PaiPipelineRunSpec) -> str:
        return self.access.region(spec.regionId)

    def _batch_key(self, tracked: Tracked) -> tuple[Any, ...] | None:
        """Runs that one ListPipelineRunsStatus may answer together, or None to poll alone."""
        spec = tracked.spec
        workspace = spec.workspaceId or tracked.status.get("workspaceId")
        if (
            not self.settings.batch_status
            or spec.suspend
            or spec.tokenSecretRef is not None
            or not workspace
            or tracked.status.get("runStatus") is None
            or tracked.generation != tracked.status.get("observedGeneration")
        ):
            return None
        return (self._region(spec), workspace, self._credentials_key(tracked))

    @staticmethod
    def _credentials_key(tracked: Tracked) -> IdentityKey:
        """Which keys sign a run's calls: a batch (or a scan) is signed with its first member's keys."""
        return identity_key(tracked.namespace, tracked.spec.credentialsSecretRef)

    def _detail_due(self, tracked: Tracked) -> bool:
        return (
            tracked.last_detail is None
            or self.clock() - tracked.last_detail >= self.settings.detail_refresh_interval.total_seconds()
        )

    async def _sync_one(self, tracked: Tracked) -> None:
        try:
            # spec.suspend holds a launch back too (create suspended, unsuspend to start); a delete never waits.
            launching = tracked.spec.launch is not None or bool(tracked.finalizers)
            if self.launcher is not None and launching and (not tracked.spec.suspend or tracked.deleting):
                outcome = await self.launcher.step(tracked)
                if isinstance(outcome, Retry):
                    self._reschedule(tracked, outcome)
                    return
                if outcome is not None:
                    tracked.busy = False
                    self._schedule(tracked, self.clock() + outcome)
                    return
            if tracked.spec.suspend:
                await self._apply(
                    tracked, suspended(tracked.spec, tracked.generation, tracked.status, self.wallclock())
                )
                return
            observation = await self._fetch(tracked)
            self._record(tracked, observation)
            await self._apply(tracked, self._reconcile(tracked, self._as_outage(tracked, observation)))
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not stop this run's polling for good nor reach kopf's retries.
            log.exception("sync of %s/%s failed unexpectedly", tracked.namespace, tracked.name)
            self._reschedule(tracked, Retry.BACKOFF)

    async def _fetch(self, tracked: Tracked) -> Observation:
        spec = tracked.spec
        who = caller(tracked, Action.VERBOSE if spec.verbose else Action.FOLLOW, self._region(spec))
        try:
            run = await self.access.get_pipeline_run(
                who, tracked.run_id, verbose=spec.verbose, manifest_type=spec.manifestType
            )
            tracked.last_detail = self.clock()
            return run
        except PaiError as exc:
            log.debug("PAI GetPipelineRun for %s/%s failed: %s", tracked.namespace, tracked.name, exc)
            return exc

    async def _sync_batch(self, key: tuple[Any, ...], members: list[Tracked]) -> None:
        region, workspace, _ = key
        try:
            try:
                answer = await self.access.list_pipeline_runs_status(
                    caller(members[0], Action.FOLLOW, region),
                    workspace,
                    # Two resources may follow one run: ask for it once.
                    list(dict.fromkeys(m.run_id for m in members)),
                )
            except PaiError as exc:
                log.debug("PAI ListPipelineRunsStatus for %d runs in %s failed: %s", len(members), workspace, exc)
                self._record(members[0], exc)
                if exc.kind in (ErrorKind.NOT_FOUND, ErrorKind.BAD_REQUEST):
                    # Says nothing about any one run (e.g. the workspace is wrong): ask for each run itself.
                    await asyncio.gather(*(self._sync_one(m) for m in members))
                else:
                    await asyncio.gather(*(self._finish(m, exc) for m in members))
                return
            if self.breaker.answered(region):
                self._release(region)
            by_id = {row.pipeline_run_id: row for row in answer.pipeline_runs}
            work = []
            for member in members:
                row = by_id.get(member.run_id)
                # A status this operator does not know is compared as PAI sent it, like any other.
                unchanged = (
                    row is not None
                    and not row.is_deleted
                    and (row.raw_status or row.status.value) == member.status.get("runStatus")
                )
                if unchanged and not self._detail_due(member):
                    assert row is not None
                    work.append(self._finish(member, row))
                else:
                    # Changed, missing or due a refresh of message and duration: ask for the details.
                    work.append(self._sync_one(member))
            await asyncio.gather(*work)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batched sync of %d runs failed unexpectedly", len(members))
            for member in members:
                self._reschedule(member, Retry.BACKOFF)

    async def _finish(self, tracked: Tracked, observation: Observation) -> None:
        if isinstance(observation, PaiError):
            self._note_failure(tracked, observation)
        else:
            tracked.failing_since = None
        await self._apply(tracked, self._reconcile(tracked, self._as_outage(tracked, observation)))

    def _as_outage(self, tracked: Tracked, observation: Observation) -> Observation:
        """While its region's circuit is open, a failed call shows the outage, as the held runs do."""
        region = self._region(tracked.spec)
        if isinstance(observation, PaiError) and observation.retryable and self.breaker.is_open(region):
            tracked.outage_shown = self.breaker.outage(region)
            return self.breaker.error(region)
        return observation

    def _reconcile(self, tracked: Tracked, observation: Observation) -> SyncResult:
        failing_for = 0.0 if tracked.failing_since is None else self.clock() - tracked.failing_since
        return reconcile(
            tracked.spec,
            tracked.generation,
            tracked.status,
            observation,
            self.wallclock(),
            self.policy,
            timedelta(seconds=failing_for),
        )

    def _note_failure(self, tracked: Tracked, error: PaiError) -> None:
        if error.retryable:
            if tracked.failing_since is None:
                tracked.failing_since = self.clock()
        else:
            tracked.failing_since = None

    def _record(self, tracked: Tracked, observation: Observation) -> None:
        """Feeds the region's circuit breaker with the outcome of one call."""
        region = self._region(tracked.spec)
        if isinstance(observation, PaiError) and observation.retryable:
            self._note_failure(tracked, observation)
            if self.breaker.failed(region, observation, tracked.key):
                metrics.PAI_CIRCUIT_OPEN.labels(region).set(1)
            if (
                self.breaker.is_open(region)
                and self.breaker.open_for(region) >= self.policy.error_grace.total_seconds()
            ):
                self._show_outage(region)
            return
        if isinstance(observation, PaiError):
            self._note_failure(tracked, observation)
        else:
            tracked.failing_since = None
        if observation_is_answer(observation) and self.breaker.answered(region):
            self._release(region)

    async def _apply(self, tracked: Tracked, result: SyncResult) -> None:
        if self.runs.get(tracked.key) is not tracked:
            return  # deleted (or replaced) while we were asking PAI: write nothing
        if result.error_reason:
            metrics.SYNC_ERRORS.labels(result.error_reason).inc()
        if result.retry in (Retry.INTERVAL, Retry.STOP):
            tracked.last_ok = self.clock()
        if result.patch:
            try:
                await self._write_status(tracked, result.patch)
            except KubeError as exc:
                if exc.status == 404:
                    return  # deleted meanwhile; the watch will say so
                if exc.status == 422 and result.error_reason is None:
                    # PAI's answer passed our checks but the API server will not store it: say so rather than
                    # keep claiming to be in sync. Only conditions are written then.
                    log.warning("status of %s/%s refused by the API server: %s", tracked.namespace, tracked.name, exc)
                    refused = MalformedResponseError(f"PAI's answer could not be stored: {exc.message[:300]}")
                    await self._apply(tracked, self._reconcile(tracked, refused))
                    return
                log.warning("status write for %s/%s failed: %s", tracked.namespace, tracked.name, exc)
                self._reschedule(tracked, Retry.BACKOFF)
                return
            except Exception as exc:
                log.warning("status write for %s/%s failed: %s", tracked.namespace, tracked.name, type(exc).__name__)
                self._reschedule(tracked, Retry.BACKOFF)
                return
        if result.retry is Retry.STOP:
            tracked.confirmed_version = tracked.resource_version
        for event in self._events_to_post(tracked, result.events):
            try:
                ref = ObjectRef(tracked.namespace, tracked.name, tracked.uid, tracked.resource_version)
                await self.kube.create_event(ref, event, self.wallclock())
                metrics.KUBE_WRITES.labels("event").inc()
            except Exception as exc:
                log.warning("event for %s/%s not posted: %s", tracked.namespace, tracked.name, exc)
        self._reschedule(tracked, result.retry)

    async def _write_status(self, tracked: Tracked, patch: dict[str, Any]) -> None:
        was = tracked.status.get("runStatus")  # read before the await: the watch may echo our write first
        written = await self.write_gate.write(lambda: self.kube.patch_status(tracked.namespace, tracked.name, patch))
        metrics.KUBE_WRITES.labels("status").inc()
        after = written.get("status") or {}
        if after.get("runStatus") != was and after.get("runStatus") in metrics.ENDED:
            metrics.observe_completion(tracked.namespace, after["runStatus"], after.get("duration"))
        tracked.status = dict(written.get("status") or tracked.status)
        tracked.resource_version = (written.get("metadata") or {}).get("resourceVersion")

    def _events_to_post(self, tracked: Tracked, events: list[Event]) -> list[Event]:
        """Logs each Event (a status transition or a change of error class) and keeps the ones to post.

        While a region's circuit is open, and for the runs it held when it closes, one Event per namespace and
        outage tells the story; the others would be thousands of copies of it.
        """
        region = self._region(tracked.spec)
        outage = self.breaker.outage(region)
        keep = events
        if tracked.outage_shown and tracked.outage_shown == outage and events:
            phase = "recovered" if _ready_true(tracked.status) else "down"
            if phase == "recovered":
                tracked.outage_shown = 0  # from now on its Events are its own again
            told = (region, outage, tracked.namespace, phase)
            keep = [] if told in self._outage_told else events
            self._outage_told.add(told)
        run_id = tracked.run_id
        for event in events:
            level = logging.WARNING if event.type == "Warning" else logging.INFO
            if not keep:
                level = logging.DEBUG  # the circuit breaker's own lines tell the story
            log.log(
                level,
                "%s/%s run=%s %s: %s",
                tracked.namespace,
                tracked.name,
                run_id,
                event.reason,
                event.message,
                extra={
                    "namespace": tracked.namespace,
                    "resource": tracked.name,
                    "run_id": run_id,
                    "reason": event.reason,
                },
            )
        return keep

    # ---- an open circuit: held runs, one probe -----------------------------------------------------------

    def _hold(self, tracked: Tracked) -> None:
        """Keeps a run out of the heap while its region's circuit is open; the first one held becomes the probe."""
        region = self._region(tracked.spec)
        tracked.busy = False
        probe_at = self.breaker.claim_probe(region, tracked.key)
        if probe_at is not None:
            self._held[region].pop(tracked.key, None)
            self._schedule(tracked, probe_at)
            return
        tracked.due = None
        tracked.heap_version += 1  # any heap entry of it is void now
        self._held[region][tracked.key] = tracked

    def _release(self, region: str) -> None:
        """The circuit closed: every held run goes now, spread over a moment (the rate limit paces the rest)."""
        metrics.PAI_CIRCUIT_OPEN.labels(region).set(0)
        held = self._held.pop(region, {})
        if held:
            log.info("resuming %d runs held while PAI Flow in %s did not answer", len(held), region)
        now = self.clock()
        for tracked in held.values():
            if self.runs.get(tracked.key) is tracked and not tracked.busy:
                self._schedule(tracked, now + self.rng.uniform(0, 1.0))

    def _show_outage(self, region: str) -> None:
        """The outage outlasted the grace: every held run shows it, once (one write each, Events per namespace)."""
        outage = self.breaker.outage(region)
        error = self.breaker.error(region)
        shown = error.describe(with_request_id=False)
        for tracked in list(self._held.get(region, {}).values()):
            if tracked.busy or self.runs.get(tracked.key) is not tracked or _ready_message(tracked.status) == shown:
                continue
            tracked.outage_shown = outage
            tracked.busy = True
            self._held[region].pop(tracked.key, None)
            self._spawn(self._show_one(tracked, error))

    async def _show_one(self, tracked: Tracked, error: PaiError) -> None:
        try:
            if tracked.failing_since is None:
                tracked.failing_since = self.clock() - self.breaker.open_for(self._region(tracked.spec))
            await self._apply(tracked, self._reconcile(tracked, error))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("showing the PAI outage on %s/%s failed", tracked.namespace, tracked.name)
            self._reschedule(tracked, Retry.BACKOFF)

    def _reschedule(self, tracked: Tracked, retry: Retry) -> None:
        tracked.busy = False
        if self.runs.get(tracked.key) is not tracked:
            return
        if retry is not Retry.STOP and self.breaker.is_open(self._region(tracked.spec)) and not tracked.rerun:
            self._hold(tracked)
            return
        now = self.clock()
        s = self.settings
        if tracked.rerun:
            tracked.rerun = False
            self._schedule(tracked, now)
            return
        if retry is Retry.STOP:
            tracked.attempt = 0
            # A launched run that just ended may still hold its finalizer: one more step removes it.
            self._schedule(tracked, now if self._launch_pending(tracked) else None)
            return
        if retry is Retry.INTERVAL:
            tracked.attempt = 0
            delay = self._scan_safety_net(tracked) or s.poll_interval_for(tracked.spec.pollInterval).total_seconds()
            batch = self._batch_key(tracked)
            if batch is not None:
                self._schedule(tracked, self._next_beat(batch, delay, now))
                return
        elif retry is Retry.SLOW:
            tracked.attempt += 1
            delay = s.slow_retry_interval.total_seconds()
        else:
            tracked.attempt += 1
            delay = backoff_delay(tracked.attempt, s.backoff_base, s.backoff_max).total_seconds()
        # Retries land anywhere in [delay/2, delay] (no synchronised retry storms); a run polled alone moves by
        # +-5% so that runs created together drift apart.
        if retry is Retry.INTERVAL:
            delay *= self.rng.uniform(0.95, 1.05)
        else:
            delay = self.rng.uniform(delay / 2, delay)
        self._schedule(tracked, now + delay)

    @staticmethod
    def _next_beat(batch: tuple[Any, ...], interval: float, now: float) -> float:
        """The next tick of this batch's own beat, between half and one and a half intervals from now.

        Runs that one ListPipelineRunsStatus answers share a beat, so they fall due at the same moment and
        take one call per interval between them; each batch's beat has its own phase (a hash of its key), so
        batches spread over the interval instead of polling together.
        """
        phase = zlib.crc32(repr((batch, interval)).encode()) % 100_003 / 100_003 * interval
        beats = math.ceil((now + interval / 2 - phase) / interval)
        return phase + beats * interval

    # ---- workspace scans (workspace_scan.py) ------------------------------------------------------
    # One ListPipelineRuns scan per workspace answers for every run of it that this replica tracks, hand-written
    # or imported, with the credentials the run itself would use; the batched status poll remains as a slow
    # safety net in case PAI does not move GmtModifiedTime on a change.

    def scan_key(self, tracked: Tracked) -> ScanKey | None:
        spec = tracked.spec
        workspace = spec.workspaceId or tracked.status.get("workspaceId")
        if not workspace:
            return None
        return (self._region(spec), workspace, self._credentials_key(tracked))

    def begin_scan(self, key: ScanKey, interval: float) -> None:
        if key in self._scans:
            self._scans[key] = interval
            return
        self._scans[key] = interval
        # Runs seen before their workspace (kopf lists both kinds at once) wait for the scan as later ones do.
        now = self.clock()
        for tracked in list(self.runs.values()):
            if tracked.due is not None and not tracked.busy and self.scan_key(tracked) == key:
                wait = self._first_sync_wait(tracked)
                if wait and tracked.due < now + wait:
                    self._schedule(tracked, now + wait)

    def end_scan(self, key: ScanKey) -> None:
        """The scan stopped (workspace deleted, suspended, handed over): its runs go back to their own polls."""
        if self._scans.pop(key, None) is None:
            return
        for tracked in list(self.runs.values()):
            if tracked.scan_seen is not None and self.scan_key(tracked) == key:
                tracked.scan_seen = None
                if tracked.due is not None and not tracked.busy:
                    self._schedule(
                        tracked, self.clock() + self.rng.uniform(0, self.settings.batch_window.total_seconds())
                    )

    def unsynced(self, key: ScanKey) -> int:
        """Runs of this scan key never read from PAI yet: the scan then reads the whole import window."""
        return sum(
            1
            for t in self.runs.values()
            # Never answered at all (an error writes conditions): a run PAI does not know stops counting.
            if t.status.get("runStatus") is None and not t.status.get("conditions") and self.scan_key(t) == key
        )

    def apply_rows(self, key: ScanKey, rows: Mapping[str, PipelineRun]) -> int:
        """Feeds one scan's rows (run id -> ListPipelineRuns row) to the runs of that scan key, through the same
        reconcile as a poll. Returns how many runs were handed a row."""
        by_run: dict[str, list[Tracked]] = defaultdict(list)
        for tracked in self.runs.values():
            if tracked.run_id in rows:
                by_run[tracked.run_id].append(tracked)
        fed = 0
        now = self.clock()
        for run_id, members in by_run.items():
            row = rows[run_id]
            for tracked in members:
                spec = tracked.spec
                if tracked.busy or spec.suspend or spec.tokenSecretRef is not None or self.scan_key(tracked) != key:
                    continue
                tracked.scan_seen = now
                if is_finished(tracked.status, tracked.generation):
                    continue  # a finished run costs nothing
                if spec.verbose:
                    # Manifest, Arguments and Options come from GetPipelineRun only: a change fetches them now.
                    if (row.raw_status or row.status.value) != tracked.status.get("runStatus"):
                        self._schedule(tracked, now)
                    continue
                tracked.busy = True
                tracked.due = None
                tracked.heap_version += 1
                tracked.last_detail = now  # a row carries everything a non-verbose GetPipelineRun does
                fed += 1
                self._spawn(self._finish_guarded(tracked, row))
        return fed

    async def _finish_guarded(self, tracked: Tracked, row: PipelineRun) -> None:
        try:
            await self._finish(tracked, row)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("applying a scan row to %s/%s failed unexpectedly", tracked.namespace, tracked.name)
            self._reschedule(tracked, Retry.BACKOFF)

    def _scan_safety_net(self, tracked: Tracked) -> float | None:
        """The slow poll interval of a run a live workspace scan answers for, else None."""
        if tracked.scan_seen is None:
            return None
        key = self.scan_key(tracked)
        if key is None or key not in self._scans:
            return None
        return max(self.settings.workspace_safety_net_interval.total_seconds(), self._scans[key])

    def _first_sync_wait(self, tracked: Tracked) -> float:
        """A new run a workspace scan can answer for waits for that scan (about one interval) before its own
        GetPipelineRun: a first sync of thousands of runs then costs a few list pages, not a call per run."""
        if tracked.status.get("runStatus") is not None or tracked.spec.verbose or tracked.spec.tokenSecretRef:
            return 0.0
        key = self.scan_key(tracked)
        interval = self._scans.get(key) if key is not None else None
        return 0.0 if interval is None else interval * 1.5

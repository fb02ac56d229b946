"""What is asked, and what follows: the poll loop, one run, one batch, applying an answer, rescheduling.

The loop pops what is due (and what falls due shortly in the same batch), asks PAI through the door
(pai_access) with one GetPipelineRun or one ListPipelineRunsStatus per batch, hands the answer to the pure
reconcile core, writes what changed (writes.py), and puts the run back in the heap as the result says.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from collections import defaultdict, deque
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from paiflow_operator import metrics
from paiflow_operator.api.runs import PaiPipelineRunSpec
from paiflow_operator.conditions import Event
from paiflow_operator.guards.circuit import Circuit
from paiflow_operator.guards.write_gate import is_too_large
from paiflow_operator.kube import KubeError
from paiflow_operator.pai.errors import ErrorKind, MalformedResponseError, PaiError
from paiflow_operator.pai.models import PipelineRun
from paiflow_operator.pai_access import Action, PaiAccess, identity_key
from paiflow_operator.runs import batching
from paiflow_operator.runs.batching import BatchKey
from paiflow_operator.runs.due import DueQueue
from paiflow_operator.runs.launcher import Launcher
from paiflow_operator.runs.outage import Outage
from paiflow_operator.runs.reconcile import (
    Observation,
    Policy,
    Retry,
    SyncResult,
    reconcile,
    restore_conditions,
    suspended,
)
from paiflow_operator.runs.registry import Registry, launch_pending
from paiflow_operator.runs.tracked import Tracked, caller
from paiflow_operator.runs.writes import RunWriter, log_events
from paiflow_operator.settings import Settings

log = logging.getLogger(__name__)


def observation_is_answer(observation: Observation) -> bool:
    """Any answer from PAI but a retryable error: PAI is up, even if it says a run is missing. A refusal before
    any call (no credentials, an access policy) says nothing about PAI."""
    return not (
        isinstance(observation, PaiError) and (observation.retryable or observation.kind is ErrorKind.CREDENTIALS)
    )


class Sync:
    def __init__(
        self,
        settings: Settings,
        access: PaiAccess,
        registry: Registry,
        due: DueQueue,
        outage: Outage,
        writer: RunWriter,
        launcher: Launcher | None,
        safety_net: Callable[[Tracked], float | None],
        *,
        clock: Callable[[], float],
        wallclock: Callable[[], datetime],
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self.access = access
        self.registry = registry
        self.runs = registry.runs
        self.due = due
        self.outage = outage
        self.breaker = outage.breaker
        self.writer = writer
        self.launcher = launcher
        # The slow interval of a run a workspace scan answers for (scan_feed.Scans.safety_net).
        self.safety_net = safety_net
        self.clock = clock
        self.wallclock = wallclock
        self.rng = rng
        self.policy = Policy(settings.heartbeat_interval, settings.max_text_field_bytes, settings.error_grace)
        self.tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        # Scan rows waiting to be applied (take_row); twice the write lane's width keeps it full.
        self.rows: deque[tuple[Tracked, PipelineRun]] = deque()
        self.row_appliers = 0
        self.max_row_appliers = 2 * settings.kube_concurrency
        # Rows ever queued and ever applied, and who waits for a count applied (rows_applied).
        self.rows_in = 0
        self.rows_out = 0
        self._row_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_seq = itertools.count()

    # ---- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        while not self._stopping:
            now = self.clock()
            horizon = now + self.settings.batch_window.total_seconds()
            due = self.due.pop_due(now, self.runs)
            if due:
                # Pull in what falls due shortly, so that runs of one workspace share a status query.
                keys = {self.batch_key(t) for t in due}
                due.extend(self.due.pop_batchable(horizon, keys, self.runs, self.batch_key))
                self._dispatch(due)
                continue
            await self.due.sleep(now)

    def _dispatch(self, due: list[Tracked]) -> None:
        groups: dict[BatchKey, list[Tracked]] = defaultdict(list)
        for tracked in due:
            circuit = self.circuit(tracked)
            if self.breaker.is_open(circuit) and not self.breaker.is_prober(circuit, tracked.key):
                self.outage.hold(tracked, circuit)
                continue
            tracked.busy = True
            self.due.taken(tracked)
            key = self.batch_key(tracked)
            if key is None:
                self.spawn(self._sync_one(tracked))
            else:
                groups[key].append(tracked)
        for key, members in groups.items():
            for chunk in batching.chunks(members, self.settings.batch_size):
                if len(chunk) == 1:
                    self.spawn(self._sync_one(chunk[0]))
                else:
                    self.spawn(self._sync_batch(key, chunk))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        self._stopping = True
        self.due.wake.set()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.rows.clear()
        for _, _, waiter in self._row_waiters:
            if not waiter.done():
                waiter.cancel()
        self._row_waiters.clear()

    def region(self, spec: PaiPipelineRunSpec) -> str:
        return self.access.region(spec.regionId)

    def circuit(self, tracked: Tracked) -> Circuit:
        """The circuit a run's calls go through: its region and the identity that signs them (one tenant's
        throttled keys hold that tenant's polls only)."""
        region = self.region(tracked.spec)
        return Circuit(region, self.access.identity(caller(tracked, Action.FOLLOW, region)))

    def batch_key(self, tracked: Tracked) -> BatchKey | None:
        spec = tracked.spec
        return batching.batch_key(
            spec,
            tracked.generation,
            tracked.status,
            self.region(spec),
            identity_key(tracked.namespace, spec.credentialsSecretRef),
            enabled=self.settings.batch_status,
        )

    # ---- one run, one batch -----------------------------------------------------------------------

    async def _sync_one(self, tracked: Tracked) -> None:
        tracked.change_seen = None
        try:
            # spec.suspend holds a launch back too (create suspended, unsuspend to start); a delete never waits.
            launching = tracked.spec.launch is not None or bool(tracked.finalizers)
            if self.launcher is not None and launching and (not tracked.spec.suspend or tracked.deleting):
                outcome = await self.launcher.step(tracked)
                if isinstance(outcome, Retry):
                    self.reschedule(tracked, outcome)
                    return
                if outcome is not None:
                    tracked.busy = False
                    self.due.schedule(tracked, self.clock() + outcome)
                    return
            if tracked.spec.suspend:
                await self._apply(
                    tracked, suspended(tracked.spec, tracked.generation, tracked.status, self.wallclock())
                )
                return
            observation = await self._fetch(tracked)
            self._record(tracked, observation)
            circuit = self.circuit(tracked)
            await self._apply(tracked, self._reconcile(tracked, self.outage.as_outage(tracked, circuit, observation)))
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not stop this run's polling for good nor reach kopf's retries.
            log.exception("sync of %s/%s failed unexpectedly", tracked.namespace, tracked.name)
            self.reschedule(tracked, Retry.BACKOFF)

    async def _fetch(self, tracked: Tracked) -> Observation:
        spec = tracked.spec
        who = caller(tracked, Action.VERBOSE if spec.verbose else Action.FOLLOW, self.region(spec))
        try:
            run = await self.access.get_pipeline_run(
                who, tracked.run_id, verbose=spec.verbose, manifest_type=spec.manifestType
            )
            tracked.last_detail = self.clock()
            return run
        except PaiError as exc:
            log.debug("PAI GetPipelineRun for %s/%s failed: %s", tracked.namespace, tracked.name, exc)
            return exc

    async def _sync_batch(self, key: BatchKey, members: list[Tracked]) -> None:
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
            circuit = self.circuit(members[0])  # a batch shares region and keys
            if self.breaker.answered(circuit):
                self.outage.release(circuit)
            by_id = {row.pipeline_run_id: row for row in answer.pipeline_runs}
            refresh = self.settings.detail_refresh_interval.total_seconds()
            work = []
            for member in members:
                row = by_id.get(member.run_id)
                # A status this operator does not know is compared as PAI sent it, like any other.
                unchanged = (
                    row is not None
                    and not row.is_deleted
                    and (row.raw_status or row.status.value) == member.status.get("runStatus")
                )
                if unchanged and not batching.detail_due(member.last_detail, self.clock(), refresh):
                    assert row is not None
                    member.change_seen = None
                    work.append(self._finish(member, row))
                elif row is not None and not unchanged and not row.is_deleted and self._leave_to_scan(member):
                    continue
                else:
                    # Changed, missing or due a refresh of message and duration: ask for the details.
                    work.append(self._sync_one(member))
            await asyncio.gather(*work)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batched sync of %d runs failed unexpectedly", len(members))
            for member in members:
                self.reschedule(member, Retry.BACKOFF)

    def _leave_to_scan(self, tracked: Tracked) -> bool:
        """A change the safety net's batch saw for a run a live workspace scan answers for: that scan brings it
        with its details within an interval, so wait for it (once) rather than GetPipelineRun. In a mass finish
        the safety net's batches that fell in the burst cost one GetPipelineRun per ended run (582 in one run
        at 10,000), each also holding a status write behind PAI's rate limit."""
        if self.safety_net(tracked) is None:
            return False
        now = self.clock()
        wait = 1.5 * self.settings.workspace_scan_interval.total_seconds()
        if tracked.change_seen is not None and now - tracked.change_seen >= wait:
            tracked.change_seen = None
            return False  # the scan did not bring it (PAI kept its modification time?): ask for the details
        if tracked.change_seen is None:
            tracked.change_seen = now
        tracked.busy = False
        self.due.schedule(tracked, tracked.change_seen + wait)
        return True

    async def _finish(self, tracked: Tracked, observation: Observation) -> None:
        if isinstance(observation, PaiError):
            self._note_failure(tracked, observation)
        else:
            tracked.failing_since = None
        circuit = self.circuit(tracked)
        await self._apply(tracked, self._reconcile(tracked, self.outage.as_outage(tracked, circuit, observation)))

    def take_row(self, tracked: Tracked, row: PipelineRun) -> None:
        """A workspace scan's row answers for the run (scan_feed.py): applied as a poll's answer would be, in
        the order the rows came, by a few appliers. Not a task per row: a first sync's scans hand over 10,000
        rows at once, and 10,000 tasks waiting for a write turn held ~30 MiB more at the peak than a queue."""
        self.rows.append((tracked, row))
        self.rows_in += 1
        # What a scan's next row is compared with while this one waits (scan_feed.apply_rows), as for a write.
        tracked.writing = row.raw_status or row.status.value
        while self.row_appliers < self.max_row_appliers and self.row_appliers < len(self.rows):
            self.row_appliers += 1
            self.spawn(self._apply_rows())

    async def _apply_rows(self) -> None:
        try:
            while self.rows:
                tracked, row = self.rows.popleft()
                try:
                    await self._finish_guarded(tracked, row)
                finally:
                    tracked.writing = None  # also when the row changed nothing and no write was made
                    self.rows_out += 1
                    self._wake_row_waiters()
        finally:
            self.row_appliers -= 1

    async def rows_applied(self) -> None:
        """Returns once every row queued so far has been applied (written, or found to change nothing)."""
        target = self.rows_in
        if self.rows_out >= target:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._row_waiters, (target, next(self._waiter_seq), waiter))
        await waiter

    def _wake_row_waiters(self) -> None:
        while self._row_waiters and self._row_waiters[0][0] <= self.rows_out:
            _, _, waiter = heapq.heappop(self._row_waiters)
            if not waiter.done():
                waiter.set_result(None)

    async def _finish_guarded(self, tracked: Tracked, row: PipelineRun) -> None:
        try:
            await self._finish(tracked, row)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("applying a scan row to %s/%s failed unexpectedly", tracked.namespace, tracked.name)
            self.reschedule(tracked, Retry.BACKOFF)

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
        """Feeds the circuit breaker of the run's region and identity with the outcome of one call."""
        circuit = self.circuit(tracked)
        if isinstance(observation, PaiError) and observation.retryable:
            self._note_failure(tracked, observation)
            if self.breaker.failed(circuit, observation, tracked.key):
                metrics.PAI_CIRCUIT_OPEN.labels(circuit.region).set(1)
            if (
                self.breaker.is_open(circuit)
                and self.breaker.open_for(circuit) >= self.policy.error_grace.total_seconds()
            ):
                self._show_outage(circuit)
            return
        if isinstance(observation, PaiError):
            self._note_failure(tracked, observation)
        else:
            tracked.failing_since = None
        if observation_is_answer(observation) and self.breaker.answered(circuit):
            self.outage.release(circuit)

    # ---- applying a result ------------------------------------------------------------------------

    async def _apply(self, tracked: Tracked, result: SyncResult) -> None:
        if self.runs.get(tracked.key) is not tracked:
            return  # deleted (or replaced) while we were asking PAI: write nothing
        if result.error_reason:
            metrics.SYNC_ERRORS.labels(result.error_reason).inc()
        if result.retry in (Retry.INTERVAL, Retry.STOP):
            tracked.last_ok = self.clock()
        if result.patch:
            try:
                await self.writer.write_status(tracked, result.patch)
            except KubeError as exc:
                if exc.status == 404:
                    return  # deleted meanwhile; the watch will say so
                if (exc.status == 422 or is_too_large(exc)) and result.error_reason is None:
                    # PAI's answer passed our checks but the API server will not store it (invalid, or too large
                    # for etcd): say so rather than keep claiming to be in sync. Only conditions are written then.
                    log.warning("status of %s/%s refused by the API server: %s", tracked.namespace, tracked.name, exc)
                    refused = MalformedResponseError(f"PAI's answer could not be stored: {exc.message[:300]}")
                    await self._apply(tracked, self._reconcile(tracked, refused))
                    return
                log.warning("status write for %s/%s failed: %s", tracked.namespace, tracked.name, exc)
                if tracked.attempt == 0 and exc.status not in (409, 0):
                    # Refused for this object (an admission policy, ...): its own retry with backoff, and one
                    # Event for the first refusal in a row. Other objects' writes do not wait for it.
                    await self.writer.post_events(tracked, [Event("Warning", "StatusWriteRefused", str(exc)[:1024])])
                self.reschedule(tracked, Retry.BACKOFF)
                return
            except Exception as exc:
                log.warning("status write for %s/%s failed: %s", tracked.namespace, tracked.name, type(exc).__name__)
                self.reschedule(tracked, Retry.BACKOFF)
                return
        if result.retry is Retry.STOP:
            tracked.confirmed_version = tracked.resource_version
        keep = self.outage.events_to_post(tracked, self.circuit(tracked), result.events)
        log_events(tracked, result.events, quiet=not keep)
        await self.writer.post_events(tracked, keep)
        self.reschedule(tracked, result.retry)

    # ---- an open circuit: the held runs show it ---------------------------------------------------

    def _show_outage(self, circuit: Circuit) -> None:
        """The outage outlasted the grace: every held run shows it, once (one write each, Events per namespace)."""
        runs, error = self.outage.to_show(circuit)
        for tracked in runs:
            self.spawn(self._show_one(tracked, error))

    async def _show_one(self, tracked: Tracked, error: PaiError) -> None:
        try:
            if tracked.failing_since is None:
                tracked.failing_since = self.clock() - self.breaker.open_for(self.circuit(tracked))
            await self._apply(tracked, self._reconcile(tracked, error))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("showing the PAI outage on %s/%s failed", tracked.namespace, tracked.name)
            self.reschedule(tracked, Retry.BACKOFF)

    # ---- conditions are derived data --------------------------------------------------------------

    def restore_conditions(self, tracked: Tracked) -> None:
        """A finished run's conditions edited by someone else are put back from its runStatus: no PAI call."""
        result = restore_conditions(tracked.spec, tracked.generation, tracked.status, self.wallclock())
        if result.patch is None:
            return
        tracked.busy = True
        self.spawn(self._restore_one(tracked, result))

    async def _restore_one(self, tracked: Tracked, result: SyncResult) -> None:
        try:
            await self._apply(tracked, result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("restoring the conditions of %s/%s failed", tracked.namespace, tracked.name)
            self.reschedule(tracked, Retry.BACKOFF)

    # ---- what next --------------------------------------------------------------------------------

    def reschedule(self, tracked: Tracked, retry: Retry) -> None:
        tracked.busy = False
        if self.runs.get(tracked.key) is not tracked:
            return
        circuit = self.circuit(tracked)
        if retry is not Retry.STOP and self.breaker.is_open(circuit) and not tracked.rerun:
            self.outage.hold(tracked, circuit)
            return
        now = self.clock()
        if tracked.rerun:
            tracked.rerun = False
            self.due.schedule(tracked, now)
            return
        if retry is Retry.STOP:
            tracked.attempt = 0
            # A launched run that just ended may still hold its finalizer: one more step removes it.
            self.due.schedule(tracked, now if launch_pending(self.launcher, tracked) else None)
            return
        if retry is Retry.INTERVAL:
            interval = (
                self.safety_net(tracked) or self.settings.poll_interval_for(tracked.spec.pollInterval).total_seconds()
            )
            self.due.after(tracked, retry, now, interval=interval, beat=self.batch_key(tracked))
            return
        self.due.after(tracked, retry, now)

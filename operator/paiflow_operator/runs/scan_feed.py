"""Rows from workspace scans into tracked runs: which scans run here, what they answer for, and their rows.

One ListPipelineRuns scan per workspace (workspaces/scanner.py) answers for every run of it that this replica
tracks, hand-written or imported, with the credentials the run itself would use; the batched status poll
remains as a slow safety net in case PAI does not move GmtModifiedTime on a change.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from paiflow_operator.access.policy import Allowed
from paiflow_operator.pai.models import PipelineRun
from paiflow_operator.pai_access import Action, IdentityKey, PaiAccess, identity_key
from paiflow_operator.runs.due import DueQueue
from paiflow_operator.runs.reconcile import is_finished
from paiflow_operator.runs.registry import Registry
from paiflow_operator.runs.tracked import Tracked, caller
from paiflow_operator.settings import Settings

# (region, PAI workspace id, whose: (namespace, Secret ref fields or "") - a scan serves one namespace)
ScanKey = tuple[str, str, IdentityKey]


class Scans:
    """The scans running on this replica (scan key -> interval in seconds), and what they mean for a run's polls."""

    def __init__(self, settings: Settings, access: PaiAccess) -> None:
        self.settings = settings
        self.access = access
        self.intervals: dict[ScanKey, float] = {}

    def scan_key(self, tracked: Tracked) -> ScanKey | None:
        spec = tracked.spec
        workspace = spec.workspaceId or tracked.status.get("workspaceId")
        if not workspace:
            return None
        return (
            self.access.region(spec.regionId),
            workspace,
            identity_key(tracked.namespace, spec.credentialsSecretRef),
        )

    def safety_net(self, tracked: Tracked) -> float | None:
        """The slow poll interval of a run a live workspace scan answers for, else None."""
        if tracked.scan_seen is None:
            return None
        key = self.scan_key(tracked)
        if key is None or key not in self.intervals:
            return None
        return max(self.settings.workspace_safety_net_interval.total_seconds(), self.intervals[key])

    def first_sync_wait(self, tracked: Tracked) -> float:
        """A new run a workspace scan can answer for waits for that scan (about one interval) before its own
        GetPipelineRun: a first sync of thousands of runs then costs a few list pages, not a call per run."""
        if tracked.status.get("runStatus") is not None or tracked.spec.verbose or tracked.spec.tokenSecretRef:
            return 0.0
        key = self.scan_key(tracked)
        interval = self.intervals.get(key) if key is not None else None
        return 0.0 if interval is None else interval * 1.5


class ScanFeed:
    """The runs' entry for the workspace scanner: scans begin and end, rows arrive, imported runs appear."""

    def __init__(
        self,
        settings: Settings,
        scans: Scans,
        registry: Registry,
        due: DueQueue,
        take_row: Callable[[Tracked, PipelineRun], None],
        rows_applied: Callable[[], Awaitable[None]],
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self.scans = scans
        self.registry = registry
        self.due = due
        self.take_row = take_row
        # Waits until every row handed over so far is applied (sync.Sync.rows_applied).
        self.rows_applied = rows_applied
        self.clock = clock
        self.rng = rng
        # Per scan key, the last scan's rows no run here took, and when (feed_new).
        self.kept: dict[ScanKey, tuple[float, dict[str, PipelineRun]]] = {}
        # Brings the scan of a key forward (workspaces/scanner.py): a new run its last scan has no row for.
        self.hurry: Callable[[ScanKey], None] = lambda key: None

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        """A run the scanner just created: tracked at once, before the watch brings it."""
        self.registry.observe(body, event_type)

    def begin_scan(self, key: ScanKey, interval: float) -> None:
        intervals = self.scans.intervals
        if key in intervals:
            intervals[key] = interval
            return
        intervals[key] = interval
        # Runs seen before their workspace (kopf lists both kinds at once) wait for the scan as later ones do.
        now = self.clock()
        for tracked in list(self.registry.runs.values()):
            if tracked.due is not None and not tracked.busy and self.scans.scan_key(tracked) == key:
                wait = self.scans.first_sync_wait(tracked)
                if wait and tracked.due < now + wait:
                    self.due.schedule(tracked, now + wait)

    def end_scan(self, key: ScanKey) -> None:
        """The scan stopped (workspace deleted, suspended, handed over): its runs go back to their own polls."""
        self.kept.pop(key, None)
        if self.scans.intervals.pop(key, None) is None:
            return
        for tracked in list(self.registry.runs.values()):
            if tracked.scan_seen is not None and self.scans.scan_key(tracked) == key:
                tracked.scan_seen = None
                if tracked.due is not None and not tracked.busy:
                    window = self.settings.batch_window.total_seconds()
                    self.due.schedule(tracked, self.clock() + self.rng.uniform(0, window))

    def unsynced(self, key: ScanKey) -> int:
        """Runs of this scan key never read from PAI yet and not being read or written now: the scan then reads
        the whole import window. (A run handed a row waits for its write: another full scan would not help.)"""
        return sum(
            1 for t in self.registry.runs.values() if unsynced(t) and not t.busy and self.scans.scan_key(t) == key
        )

    def apply_rows(self, key: ScanKey, rows: Mapping[str, PipelineRun]) -> int:
        """Feeds one scan's rows (run id -> ListPipelineRuns row) to the runs of that scan key, through the same
        reconcile as a poll. Returns how many runs were handed a row. Rows no run here took are kept until the
        next scan of the key, for runs the watch brings meanwhile (``feed_new``)."""
        by_run: dict[str, list[Tracked]] = defaultdict(list)
        for tracked in self.registry.runs.values():
            if tracked.run_id in rows:
                by_run[tracked.run_id].append(tracked)
        fed = 0
        now = self.clock()
        # One decision per namespace and Secret within one scan: a policy names neither runs nor run ids.
        decisions: dict[tuple[str, IdentityKey], bool] = {}
        for run_id, members in by_run.items():
            for tracked in members:
                fed += self._feed(key, tracked, rows[run_id], decisions, now)
        self.kept[key] = (now, {run_id: row for run_id, row in rows.items() if run_id not in by_run})
        return fed

    def apply_page(self, key: ScanKey, rows: Mapping[str, PipelineRun]) -> dict[str, PipelineRun]:
        """One page of a scan, as it arrives: runs never read from PAI take their row at once, so a first sync
        of thousands of runs starts writing after one page per workspace, not after every page of every
        workspace. A run already shown waits for the whole scan (``apply_rows``), whose newest row of it wins:
        rows shift while we page, and a row from page 3 may be older than the same run's on the re-read page 1.
        Rows of runs not tracked here yet are kept for the watch's arrivals (``feed_new``). Returns the rows
        taken, by run id, for the scan's end to skip."""
        taken: dict[str, PipelineRun] = {}
        known: set[str] = set()
        decisions: dict[tuple[str, IdentityKey], bool] = {}
        now = self.clock()
        for tracked in self.registry.runs.values():
            row = rows.get(tracked.run_id)
            if row is None:
                continue
            known.add(tracked.run_id)
            if unsynced(tracked) and not tracked.busy and self._feed(key, tracked, row, decisions, now):
                taken[tracked.run_id] = row
        since, kept = self.kept.get(key) or (now, {})
        kept.update((run_id, row) for run_id, row in rows.items() if run_id not in known)
        self.kept[key] = (since, kept)
        return taken

    def feed_new(self, tracked: Tracked) -> bool:
        """A run the watch just brought, never read from PAI, takes its row from its workspace's last scan if
        that scan is recent (at most one interval old, as fresh as a row of the next scan would be when its
        write gets its turn). A first sync of 10,000 runs: kopf lists them over tens of seconds, and the scans
        run when a few thousand are known; without this the rest waited for the next scan, which waits for
        its own status write behind the burst's. Returns whether the run was handed a row."""
        if not unsynced(tracked) or self.scans.first_sync_wait(tracked) == 0:
            return False
        key = self.scans.scan_key(tracked)
        assert key is not None  # first_sync_wait: a live scan answers for it
        kept = self.kept.get(key)
        now = self.clock()
        row = kept[1].get(tracked.run_id) if kept is not None and now - kept[0] <= self.scans.intervals[key] else None
        if row is None or not self._feed(key, tracked, row, {}, now):
            # Newer than the last scan (or that scan is old): the next one, brought forward a little, answers.
            self.hurry(key)
            return False
        return True

    def set_hurry(self, hurry: Callable[[ScanKey], None]) -> None:
        self.hurry = hurry

    def _feed(
        self,
        key: ScanKey,
        tracked: Tracked,
        row: PipelineRun,
        decisions: dict[tuple[str, IdentityKey], bool],
        now: float,
    ) -> int:
        spec = tracked.spec
        if spec.suspend or spec.tokenSecretRef is not None or self.scans.scan_key(tracked) != key:
            return 0
        decision_key = (tracked.namespace, identity_key(tracked.namespace, spec.credentialsSecretRef))
        allowed = decisions.get(decision_key)
        if allowed is None:
            who = caller(tracked, Action.FOLLOW, key[0])
            allowed = decisions[decision_key] = isinstance(self.scans.access.decide(who, key[1]), Allowed)
        if not allowed:
            return 0  # the scan may import, this run may not be followed: its own poll shows why
        if tracked.busy:
            # A poll or a write is in flight. Dropping a row that says something else would leave the
            # change to the safety net: this scan's cut-off moves past it, and the next scan never reads
            # it again. Look again as soon as the run is free (a rare, batched call). A row saying what
            # the write in flight writes is no news (a burst's writes wait their turn while the next scan
            # reads the same rows again): looking again would cost a GetPipelineRun each.
            shown = tracked.writing or tracked.status.get("runStatus")
            if (row.raw_status or row.status.value) != shown:
                tracked.rerun = True
            return 0
        tracked.scan_seen = now
        if is_finished(tracked.status, tracked.generation):
            return 0  # a finished run costs nothing
        if spec.verbose:
            # Manifest, Arguments and Options come from GetPipelineRun only: a change fetches them now.
            if (row.raw_status or row.status.value) != tracked.status.get("runStatus"):
                self.due.schedule(tracked, now)
            return 0
        if tracked.change_seen is not None and (row.raw_status or row.status.value) == tracked.status.get("runStatus"):
            return 0  # a batched query saw a change this row does not show yet: its own look (sync.py) stands
        tracked.busy = True
        tracked.change_seen = None
        self.due.void(tracked)
        tracked.last_detail = now  # a row carries everything a non-verbose GetPipelineRun does
        self.take_row(tracked, row)
        return 1


def unsynced(tracked: Tracked) -> bool:
    """Never answered at all (an error writes conditions): a run PAI does not know stops counting."""
    return tracked.status.get("runStatus") is None and not tracked.status.get("conditions")
